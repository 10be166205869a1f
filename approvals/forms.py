"""Forms of the approvals inbox. A single decision is read field by field in the view (its
edit fields are the request's own); the model's ``decide`` is the judge of every value."""

from __future__ import annotations

from typing import Any

from django import forms

from approvals.models import MAX_COMMENT

#: Requests decided by one bulk POST at most.
BULK_MAX = 100
BULK_VERDICTS = {"approve": "Approve", "reject": "Reject"}


class BulkDecisionForm(forms.Form):
    """Approve or reject the selected requests. Ids are kept as text: one that names no
    request the person may see is counted as not found, like any other."""

    verdict = forms.ChoiceField(choices=list(BULK_VERDICTS.items()))
    request = forms.MultipleChoiceField(required=False)
    comment = forms.CharField(required=False, max_length=MAX_COMMENT)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["request"].valid_value = lambda value: True  # any text; parsed below

    def clean_request(self) -> list[str]:
        values = list(dict.fromkeys(self.cleaned_data.get("request") or []))
        if not values:
            raise forms.ValidationError("Select at least one request.")
        if len(values) > BULK_MAX:
            raise forms.ValidationError(f"Select at most {BULK_MAX} requests at a time.")
        return values
