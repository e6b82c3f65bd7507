"""What SendGrid's Mail Send accepts: the rules of its published schema and the limits its documentation
adds, as one function the fake ESP answers by (`validate_mail_send`).

Required fields, at most 1000 personalizations and 1000 recipients, valid addresses, string-only
substitutions of at most 10,000 bytes per personalization, string custom_args of at most 10,000 bytes,
names with a comma or semicolon only quoted, no reserved headers, header values in ASCII, non-empty
content with text/plain first, and `mail_settings.sandbox_mode.enable` a boolean. Errors take SendGrid's shape `{"message", "field", "help"}`.
"""

from __future__ import annotations

import re
from typing import Any

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_SUBSTITUTIONS_BYTES = 10_000
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_BODY_BYTES = 30 * 1024 * 1024
MAX_CATEGORIES = 10
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "Content-Type",
        "Content-Transfer-Encoding",
        "To",
        "From",
        "Subject",
        "Reply-To",
        "CC",
        "BCC",
    )
)
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."
_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\]+\.[^@\s<>(),;:\"\[\]\\.]{2,}$")
_MAX_ERRORS = 20


def _nbytes(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8"))


def _error(message: str, field: str | None, help_anchor: str | None = None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": (_HELP + help_anchor) if help_anchor else None}


def _check_address(
    obj: object, where: str, errors: list[dict[str, Any]], reject: re.Pattern[str] | None
) -> None:
    if not isinstance(obj, dict):
        errors.append(_error("Email objects must be objects with an email property.", where))
        return
    email = obj.get("email")
    if not isinstance(email, str) or not _EMAIL.match(email) or (reject is not None and reject.search(email)):
        errors.append(_error("Does not contain a valid address.", where + ".email", "personalizations.to"))
    name = obj.get("name")
    if name is not None and not isinstance(name, str):
        errors.append(
            _error("Invalid type. Expected: string, given: " + type(name).__name__ + ".", where + ".name")
        )
    elif name and ("," in name or ";" in name) and not (len(name) > 1 and name[0] == name[-1] == '"'):
        # SendGrid itself answers 202 and then drops the message as an invalid address: refused here,
        # so that a test sees what a real send would silently lose.
        errors.append(_error("A name may not contain commas or semicolons unless quoted.", where + ".name"))


def _check_headers(headers: object, where: str, errors: list[dict[str, Any]]) -> None:
    if not isinstance(headers, dict):
        errors.append(_error("Invalid type. Expected: object.", where, "headers"))
        return
    for key, value in headers.items():
        if key.lower() in RESERVED_HEADERS:
            errors.append(
                _error(f"The header {key} is reserved and may not be set.", f"{where}.{key}", "headers")
            )
        if not isinstance(value, str):
            errors.append(
                _error(
                    f"Invalid type. Expected: string, given: {type(value).__name__}.",
                    f"{where}.{key}",
                    "headers",
                )
            )
        elif not value.isascii():
            # Header fields are ASCII (RFC 5322 §2.2); SendGrid asks for unicode to be encoded (RFC 2047).
            errors.append(
                _error("Header values must be properly encoded ASCII.", f"{where}.{key}", "headers")
            )


def _check_string_map(
    obj: object, where: str, limit: int, what: str, errors: list[dict[str, Any]], anchor: str
) -> None:
    if not isinstance(obj, dict):
        errors.append(_error("Invalid type. Expected: object.", where, anchor))
        return
    total = 0
    for key, value in obj.items():
        if not isinstance(value, str):
            errors.append(
                _error(
                    f"Invalid type. Expected: string, given: {type(value).__name__}.",
                    f"{where}.{key}",
                    anchor,
                )
            )
            continue
        total += _nbytes(key) + _nbytes(value)
    if total > limit:
        errors.append(
            _error(
                f"The total size of {what} may not exceed {limit:,} bytes per personalization.", where, anchor
            )
        )


def validate_mail_send(body: object, reject: re.Pattern[str] | None = None) -> list[dict[str, Any]]:
    """The SendGrid errors a Mail Send body earns (empty when SendGrid would accept it).

    `reject`, when given, makes matching addresses count as invalid ones.
    """
    errors: list[dict[str, Any]] = []
    if not isinstance(body, dict):
        return [_error("Bad Request", None)]
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            _error(
                "The personalizations field is required and must have at least one personalization.",
                "personalizations",
                "personalizations",
            )
        )
        personalizations = []
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        errors.append(
            _error(
                f"You may not have more than {MAX_PERSONALIZATIONS} personalizations per API request.",
                "personalizations",
                "personalizations",
            )
        )
        personalizations = []

    every_has_subject = bool(personalizations)
    recipients = 0
    for i, p in enumerate(personalizations):
        if len(errors) >= _MAX_ERRORS:
            break
        where = f"personalizations.{i}"
        if not isinstance(p, dict):
            errors.append(_error("Personalizations must be objects.", where, "personalizations"))
            continue
        to = p.get("to")
        if not isinstance(to, list) or not to:
            errors.append(
                _error(
                    "The to array is required for all personalization objects, and must have at least one "
                    "email object with a valid email address.",
                    where + ".to",
                    "personalizations.to",
                )
            )
            to = []
        seen: set[str] = set()
        for kind in ("to", "cc", "bcc"):
            addresses = to if kind == "to" else p.get(kind, [])
            if not isinstance(addresses, list):
                errors.append(_error("Invalid type. Expected: array.", f"{where}.{kind}", "personalizations"))
                continue
            recipients += len(addresses)
            for j, a in enumerate(addresses):
                _check_address(a, f"{where}.{kind}.{j}", errors, reject)
                email = a.get("email") if isinstance(a, dict) else None
                if isinstance(email, str):
                    lowered = email.lower()
                    if lowered in seen:
                        errors.append(
                            _error(
                                "Each email address in the personalization block should be unique between to, "
                                "cc, and bcc. We found the first duplicate instance of ["
                                + email
                                + "] in the "
                                f"personalizations.{i}.{kind} field.",
                                f"{where}.{kind}",
                                "personalizations",
                            )
                        )
                    seen.add(lowered)
        subject = p.get("subject")
        if subject is None:
            every_has_subject = False
        elif not isinstance(subject, str) or not subject:
            errors.append(_error("The subject must be a non-empty string.", where + ".subject", "subject"))
        subs = p.get("substitutions")
        if subs is not None:
            _check_string_map(
                subs,
                where + ".substitutions",
                MAX_SUBSTITUTIONS_BYTES,
                "substitutions",
                errors,
                "personalizations.substitutions",
            )
        args = p.get("custom_args")
        if args is not None:
            _check_string_map(
                args, where + ".custom_args", MAX_CUSTOM_ARGS_BYTES, "custom_args", errors, "custom_args"
            )
        headers = p.get("headers")
        if headers is not None:
            _check_headers(headers, where + ".headers", errors)
    if recipients > MAX_RECIPIENTS:
        errors.append(
            _error(
                f"The total number of recipients must be no more than {MAX_RECIPIENTS}.", "personalizations"
            )
        )

    sender = body.get("from")
    if not isinstance(sender, dict) or not isinstance(sender.get("email"), str):
        errors.append(
            _error(
                "The from object must be provided for every email send. It is an object that requires the "
                "email parameter, but may also contain a name parameter.",
                "from.email",
                "from",
            )
        )
    else:
        _check_address(sender, "from", errors, None)
    for key in ("reply_to",):
        if key in body:
            _check_address(body[key], key, errors, None)

    template_id = body.get("template_id")
    subject = body.get("subject")
    if subject is not None and (not isinstance(subject, str) or not subject):
        errors.append(_error("The subject must be a non-empty string.", "subject", "subject"))
    elif subject is None and not every_has_subject and not template_id:
        errors.append(
            _error(
                "The subject is required. You can get around this requirement if you use a template with a "
                "subject defined or if every personalization has a subject defined.",
                "subject",
                "subject",
            )
        )

    content = body.get("content")
    if content is None:
        if not template_id:
            errors.append(
                _error(
                    "Unless a valid template_id is provided, the content parameter is required. There must be at "
                    "least one defined content block.",
                    "content",
                    "content",
                )
            )
    elif not isinstance(content, list) or not content:
        errors.append(
            _error("The content parameter must be an array with at least one block.", "content", "content")
        )
    else:
        types = []
        for i, block in enumerate(content):
            if not isinstance(block, dict):
                errors.append(_error("Content blocks must be objects.", f"content.{i}", "content"))
                continue
            ctype, value = block.get("type"), block.get("value")
            if not isinstance(ctype, str) or not ctype:
                errors.append(
                    _error(
                        "The content type must be a string at least one character in length.",
                        f"content.{i}.type",
                        "content.type",
                    )
                )
            if not isinstance(value, str) or not value:
                errors.append(
                    _error(
                        "The content value must be a string at least one character in length.",
                        f"content.{i}.value",
                        "content.value",
                    )
                )
            types.append(ctype)
        if "text/plain" in types and types.index("text/plain") != 0:
            errors.append(
                _error(
                    "If present, text/plain must be first, followed by text/html, followed by any other content.",
                    "content",
                    "content",
                )
            )
        if types.count("text/plain") > 1 or types.count("text/html") > 1:
            errors.append(
                _error(
                    "If present, text/plain and text/html may only be provided once.", "content", "content"
                )
            )

    if "headers" in body:
        _check_headers(body["headers"], "headers", errors)
    categories = body.get("categories")
    if categories is not None and (
        not isinstance(categories, list)
        or len(categories) > MAX_CATEGORIES
        or not all(isinstance(c, str) and len(c) <= 255 for c in categories)
    ):
        errors.append(
            _error(
                f"Up to {MAX_CATEGORIES} categories of at most 255 characters each.",
                "categories",
                "categories",
            )
        )
    sandbox = (body.get("mail_settings") or {}).get("sandbox_mode")
    if sandbox is not None and (not isinstance(sandbox, dict) or not isinstance(sandbox.get("enable"), bool)):
        errors.append(
            _error(
                "The sandbox mode enable param should be a boolean value.",
                "mail_settings.sandbox_mode.enable",
                "mail_settings.sandbox_mode.enable",
            )
        )
    custom_args = body.get("custom_args")
    if isinstance(custom_args, dict):
        _check_string_map(
            custom_args, "custom_args", MAX_CUSTOM_ARGS_BYTES, "custom_args", errors, "custom_args"
        )
    elif custom_args is not None and not isinstance(custom_args, str):
        errors.append(_error("Invalid type. Expected: object.", "custom_args", "custom_args"))
    return errors[:_MAX_ERRORS]
