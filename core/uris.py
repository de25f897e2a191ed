"""Credentials in URIs: mask them for display, keep them out of stored fields.

A tracking URI such as `postgresql://ml:s3cret@db/mlflow` or
`https://user:token@mlflow.example.com` carries a password. Whatever is
printed, logged or put in an artifact goes through `mask_uri`; whatever is
stored in a block keeps the password apart (`split_password`) in a SecretStr.

Example:
    >>> mask_uri("postgresql://ml:s3cret@db:5432/mlflow")
    'postgresql://ml:***@db:5432/mlflow'
    >>> mask_uri("https://mlflow.example.com/?token=abc&x=1")
    'https://mlflow.example.com/?token=***&x=1'
    >>> split_password("postgresql://ml:s3cret@db/mlflow")
    ('postgresql://ml@db/mlflow', 's3cret')
    >>> with_password("postgresql://ml@db/mlflow", "s3cret")
    'postgresql://ml:s3cret@db/mlflow'
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

MASK = "***"
# Query parameters that carry a credential (matched case-insensitively, as a suffix: db_password, api_key).
_SECRET_QUERY = re.compile(r"(?i)([?&;][^=&;#]*(?:password|passwd|pwd|secret|token|key|signature|credential)=)[^&;#]*")


# scheme://user:password@ ; rebuilt by hand, because urlunsplit drops the empty
# authority of `sqlite:////abs/path` and would change the URI.
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/?#]*)(?::(?P<password>[^/?#]*))?@")


def mask_uri(uri: str | None) -> str:
    """`uri` with any password (and credential-like query values) replaced by `***`."""
    if not uri:
        return uri or ""
    match = _USERINFO.match(uri)
    if match and match["password"] is not None:
        uri = f"{match['head']}{match['user']}:{MASK}@{uri[match.end() :]}"
    return _SECRET_QUERY.sub(rf"\g<1>{MASK}", uri)


def split_password(uri: str) -> tuple[str, str | None]:
    """(`uri` without its password, the password or None)."""
    match = _USERINFO.match(uri)
    if not match or match["password"] is None:
        return uri, None
    return f"{match['head']}{match['user']}@{uri[match.end() :]}", unquote(match["password"])


def with_password(uri: str, password: str | None) -> str:
    """`uri` with `password` put back into its user part (unchanged when there is none to add)."""
    if not password:
        return uri
    match = _USERINFO.match(uri)
    if not match or match["password"] is not None:
        return uri
    return f"{match['head']}{match['user']}:{quote(password, safe='')}@{uri[match.end() :]}"


def password_moved_apart(values, uri_field: str, password_field: str):
    """Block field values with a password written into `uri_field` moved to `password_field`.

    A URI is shown in the UI and in reprs; the password field is a secret. A password given
    in both places keeps the one in the secret field.

    Example:
        >>> moved = password_moved_apart({"url": "postgresql://crisis:s3cret@db/ml"}, "url", "password")
        >>> moved["url"], moved["password"]
        ('postgresql://crisis@db/ml', 's3cret')
    """
    if isinstance(values, dict) and isinstance(values.get(uri_field), str):
        uri, password = split_password(values[uri_field])
        if password is not None:
            values = {**values, uri_field: uri}
            if not values.get(password_field):
                values[password_field] = password
    return values
