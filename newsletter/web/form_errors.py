"""What went wrong with one submitted form, field by field, for the page that shows the form again.

Every admin and public form reports its problems the same way (WCAG 3.3.1 and 3.3.3): routes collect
messages into a `FormErrors` and pass it to the template as `form_errors`, together with the values the
person typed, and answer with status 400. The templates do the rest through the macros of
`templates/web/_fields.html`:

- `error_summary(form_errors)`: a focused box at the top listing each problem as a link to its field;
- `field(...)`, `checkboxes(...)`: a labelled control that, when its name has an error, is marked
  `aria-invalid="true"` and described by its message (`aria-describedby`);

and `base.html` puts "Error: " in front of the page title. The element ids come from here
(`field_id`), so the summary's links and the fields can never disagree.

    >>> errors = FormErrors(prefix="nl-")
    >>> errors.add("email", "Enter an email address, like name@example.org.")
    >>> errors.field_id("email"), errors.error_id("email"), bool(errors)
    ('nl-email', 'nl-email-error', True)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping


class FormErrors(Mapping[str, str]):
    """Field name → message, in the order the fields appear on the page (the order of `add`).

    A mapping, so `form_errors.get("email")` and `form_errors | length` work in templates; empty (and
    false) when the form was fine or has not been sent yet.
    """

    def __init__(self, messages: Mapping[str, str] | None = None, *, prefix: str = "") -> None:
        self.prefix = prefix
        self._messages: dict[str, str] = {}
        for name, message in (messages or {}).items():
            self.add(name, message)

    def add(self, name: str, message: str) -> None:
        """Record the problem with field `name` (a second message for the same field replaces the first:
        one clear sentence per field reads better than a list)."""
        self._messages[name] = message

    def field_id(self, name: str) -> str:
        """The id of the control a summary link moves to (the first box of a group of checkboxes)."""
        return self.prefix + name.replace("_", "-")

    def error_id(self, name: str) -> str:
        """The id of the message, for the control's `aria-describedby`."""
        return f"{self.field_id(name)}-error"

    def __getitem__(self, name: str) -> str:
        return self._messages[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    def __repr__(self) -> str:
        return f"FormErrors({self._messages!r}, prefix={self.prefix!r})"
