"""Shape of users on the wire. Field rules come from users.validation, shared with the CSV path,
so a value the importer rejects is rejected here with the same message."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from users.payloads import user_payload
from users.validation import EMAIL_MAX_LENGTH, NAME_MAX_LENGTH, FieldError, clean_email, clean_name


def _shared_rule(rule, value, **kwargs):
    try:
        return rule(value, **kwargs)
    except FieldError as error:
        raise serializers.ValidationError(error.message) from None


class UserSerializer(serializers.Serializer):
    """A user as the API, the cache and the stream show it (users.payloads.user_payload)."""

    id = serializers.IntegerField(read_only=True)
    first_name = serializers.CharField(
        allow_blank=True, trim_whitespace=False, help_text=f"At most {NAME_MAX_LENGTH} characters."
    )
    last_name = serializers.CharField(
        allow_blank=True, trim_whitespace=False, help_text=f"At most {NAME_MAX_LENGTH} characters."
    )
    email_address = serializers.CharField(
        trim_whitespace=False, help_text=f"A valid address, at most {EMAIL_MAX_LENGTH} characters."
    )
    created_at = serializers.DateTimeField(
        required=False, help_text="ISO 8601; defaults to the time of creation."
    )
    deleted_at = serializers.DateTimeField(read_only=True, allow_null=True)
    merged_at = serializers.DateTimeField(read_only=True, allow_null=True)
    parent_user_id = serializers.IntegerField(read_only=True, allow_null=True)

    def validate_first_name(self, value: str) -> str:
        return _shared_rule(clean_name, value, column="first_name")

    def validate_last_name(self, value: str) -> str:
        return _shared_rule(clean_name, value, column="last_name")

    def validate_email_address(self, value: str) -> str:
        return _shared_rule(clean_email, value, column="email_address")

    def to_representation(self, instance) -> dict[str, Any]:
        # Already a payload (from the cache), or a model instance.
        return instance if isinstance(instance, dict) else user_payload(instance)


class ErrorSerializer(serializers.Serializer):
    """The body of every error that is not a validation error."""

    detail = serializers.CharField()
