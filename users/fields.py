"""The encrypted email column (users.models.User.email_address).

In Python a user's `email_address` is always the plaintext; in PostgreSQL it is a token
(users.crypto), written with its blind indexes (users.email_index): whatever saves a user, a
save(), create() or bulk_create(), goes through `pre_save` here, which fills the index columns
the model declares after this one. A lookup on the column would compare tokens, which never
match an address (a filter that silently finds nothing): all but `isnull` are refused, and
searches go through the indexes (users.selectors).
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import FieldError
from django.db import models

from users.crypto import email_decrypt, email_encrypt, is_token
from users.email_index import EMAIL_INDEX_COLUMNS, email_index_values
from users.validation import EMAIL_MAX_LENGTH


class EncryptedEmailField(models.TextField):
    description = "An email address, encrypted at rest with its blind indexes"

    def from_db_value(self, value, expression, connection):
        # A plaintext value is a row the encrypting migration has not reached yet (it runs in
        # batches while the service serves): shown as it is.
        if value is None or not is_token(value):
            return value
        return email_decrypt(value)

    def pre_save(self, model_instance, add):
        address = super().pre_save(model_instance, add)
        if address is not None:
            for name, value in zip(EMAIL_INDEX_COLUMNS, email_index_values(address), strict=True):
                setattr(model_instance, name, value)
        return address

    def get_db_prep_save(self, value, connection):
        if value is None or is_token(value):
            return value
        return super().get_db_prep_save(email_encrypt(value), connection)

    def get_lookup(self, lookup_name):
        if lookup_name != "isnull":
            raise FieldError(
                f"email_address is encrypted: no `{lookup_name}` lookup; search through "
                "users.selectors (user_filter_email_address, user_contains)"
            )
        return super().get_lookup(lookup_name)

    def formfield(self, **kwargs):
        # One line of at most an address's length, not the TextField's text area.
        return super().formfield(
            **{"max_length": EMAIL_MAX_LENGTH, "widget": forms.TextInput, **kwargs}
        )
