"""What counts as a secret: key names and value patterns, never a bare substring.

Used twice: ``calib-run`` and ``calib-judge`` refuse a secret given as a command-line
override before anything is written (:func:`override_secrets`), and the W&B logger
redacts the config it sends (``eval.loggers.redact``). A substring rule ("token") would
hide ``max_new_tokens``; these rules look at whole name parts and at what the value
looks like.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

#: Key names (the last dotted part, lower case) that always hold a secret when set.
SECRET_NAMES = frozenset(
    {
        "api_key",
        "apikey",
        "api_token",
        "access_token",
        "auth_token",
        "bearer_token",
        "hf_token",
        "refresh_token",
        "session_token",
        "token",
        "password",
        "passwd",
        "secret",
        "client_secret",
        "secret_key",
        "private_key",
        "authorization",
        "credentials",
    }
)
#: A name part that marks a secret whatever comes before it (``openai_api_key``, ``db_password``).
SECRET_SUFFIX = re.compile(r"(^|_)(api_?key|password|passwd|secret|secret_key|credentials)$")
#: ``*token*`` names that are secrets only when the value looks like a key (``wandb_token``).
TOKEN_NAME = re.compile(r"(^|_)token$")
#: Names of *where* a secret lives, not the secret: ``api_key_env: OPENAI_API_KEY``.
POINTER_SUFFIXES = ("_env", "_var", "_file", "_path", "_name")
#: Values that look like credentials, whatever their key.
KEY_PATTERNS = re.compile(
    r"""(
        sk-[A-Za-z0-9_-]{16,}            # OpenAI / Anthropic style
      | hf_[A-Za-z0-9]{20,}              # Hugging Face
      | gh[pousr]_[A-Za-z0-9]{20,}       # GitHub
      | xox[abpr]-[A-Za-z0-9-]{10,}      # Slack
      | AKIA[0-9A-Z]{16}                 # AWS access key id
      | AIza[0-9A-Za-z_-]{30,}           # Google API key
      | eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+   # a JWT
      | [Bb]earer\s+[A-Za-z0-9._~+/-]{16,}
    )""",
    re.VERBOSE,
)
#: A long opaque string of letters and digits: what an unknown kind of key looks like.
OPAQUE = re.compile(r"^(?=.*[A-Za-z])(?=.*\d)[A-Za-z0-9_\-]{20,}$")


def key_name(key: Any) -> str:
    return str(key).rsplit(".", 1)[-1].lower().lstrip("+~")


def is_pointer(key: Any) -> bool:
    """A key that names where a secret lives (``api_key_env``), not the secret itself."""
    return key_name(key).endswith(POINTER_SUFFIXES)


def looks_like_key(value: Any) -> bool:
    """A string that looks like a credential (a known prefix, a JWT, a long opaque token)."""
    if not isinstance(value, str):
        return False
    return bool(KEY_PATTERNS.search(value) or OPAQUE.match(value.strip()))


def is_secret(key: Any, value: Any) -> bool:
    """Whether ``key: value`` holds a secret (by the key's name, or by the value's look)."""
    if secret_by_name(key, value):
        return True
    return (
        isinstance(value, str) and not value.startswith("${") and bool(KEY_PATTERNS.search(value))
    )


def secret_by_name(key: Any, value: Any) -> bool:
    """Whether the key's name says it holds a secret (``api_key``, ``*_password``, ``token``;
    a ``*_token`` only with a key-like value; never ``api_key_env`` nor ``max_new_tokens``)."""
    if value is None or value == "" or isinstance(value, bool | int | float):
        return False
    if isinstance(value, str) and value.startswith("${"):
        return False  # an interpolation (${oc.env:NAME}) names the secret, it does not hold it
    name = key_name(key)
    if is_pointer(name):
        return False
    if name in SECRET_NAMES or SECRET_SUFFIX.search(name):
        return True
    return bool(TOKEN_NAME.search(name)) and looks_like_key(value)


def override_secrets(overrides: Iterable[str]) -> list[str]:
    """The keys of command-line overrides (``[+~]key=value``) that carry a secret."""
    found = []
    for override in overrides:
        if override.startswith("-") or "=" not in override:
            continue
        key, value = override.split("=", 1)
        if is_secret(key.lstrip("+~"), value.strip("'\"")):
            found.append(key.lstrip("+~"))
    return found


def secret_override_message(
    keys: list[str], where: str = "the run's config.yaml, .hydra/*.yaml and the W&B run"
) -> str:
    """What ``calib-run`` (and ``calib-judge``) says (the values are never repeated)."""
    first = keys[0]
    env_key = f"{first.rsplit('.', 1)[0]}.api_key_env" if "." in first else "judge.api_key_env"
    return (
        f"{', '.join(keys)}: a secret on the command line would be written into {where}. "
        "Nothing was written. Put it in an "
        "environment variable and name that variable instead, e.g. "
        f"export OPENAI_API_KEY=... then {env_key}=OPENAI_API_KEY"
    )
