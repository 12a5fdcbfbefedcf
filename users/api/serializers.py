"""Shape of users on the wire. Field rules come from users.validation, shared with the CSV path,
so a value the importer rejects is rejected here with the same message."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from users.columns import USER_COLUMNS
from users.models import User
from users.payloads import user_payload
from users.validation import EMAIL_MAX_LENGTH, NAME_MAX_LENGTH, FieldError, clean_email, clean_name

_NAME_HELP = (
    f"Required: not blank once trimmed, at most {NAME_MAX_LENGTH} characters, no control "
    "characters."
)


# What POST /users takes; the id is assigned and the other columns come only from imports.
WRITABLE = ("first_name", "last_name", "email_address", "created_at")


def _shared_rule(rule, value, **kwargs):
    try:
        return rule(value, **kwargs)
    except FieldError as error:
        raise serializers.ValidationError(error.message) from None


class StrictCharField(serializers.CharField):
    """A JSON string, and only that: DRF's CharField would turn `1` or `1.5` into "1"."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class UserSerializer(serializers.ModelSerializer):
    """A user as the API, the cache and the stream show it (users.payloads.user_payload)."""

    # Blank values reach the shared rules (allow_blank), so the API and the CSV path give the
    # same message for them.
    first_name = StrictCharField(allow_blank=True, trim_whitespace=False, help_text=_NAME_HELP)
    last_name = StrictCharField(allow_blank=True, trim_whitespace=False, help_text=_NAME_HELP)
    email_address = StrictCharField(
        allow_blank=True,
        trim_whitespace=False,
        help_text=f"A valid address, at most {EMAIL_MAX_LENGTH} characters.",
    )
    created_at = serializers.DateTimeField(
        required=False, help_text="ISO 8601; defaults to the time of creation."
    )

    class Meta:
        model = User
        # Every column (users.columns); POST sets the four declared above, the rest is read-only.
        fields = USER_COLUMNS
        read_only_fields = [name for name in USER_COLUMNS if name not in WRITABLE]

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
