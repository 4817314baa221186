"""Who is asking: named users (app logins, HTTP keys) and the admin rule, shared by the app and the API.

Sources, all optional (none set: one local user, no login, who may do everything):
- `Settings.users`: JSON `{"alice": {"password": "...", "api_keys": ["..."], "admin": false}}`: a login for the
  app and keys for HTTP that both act as that user (uploads private to alice, whichever door she uses).
- `Settings.api_keys` (`{"legal": ["k1"], "*": ["admin-key"]}`): keys not named in `users` act as their own
  user, `key-<sha256 prefix>`; a `*` key is an admin.
- `ASSISTANT_APP_PASSWORD` (+ `ASSISTANT_APP_USER`, default "assistant"): the single app login of earlier
  versions; that user is an admin.

An admin publishes a document to every user of a domain, removes anyone's upload, lists every upload and
downloads the feedback log. Passwords and keys are compared in constant time.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass

from assistant.errors import SettingsError

LOCAL = None  # the user of a deployment without logins or keys: sees and may do everything public


@dataclass(frozen=True)
class User:
    name: str
    admin: bool = False


def key_user_name(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:10]


class Users:
    def __init__(self, named: dict[str, dict], api_keys: dict[str, list[str]], app_login: tuple[str, str] | None):
        self._passwords: dict[str, str] = {}
        self._admins: set[str] = set()
        self._by_key: dict[str, User] = {}
        self._named_keys: set[str] = set()
        for name, spec in named.items():
            if not isinstance(name, str) or not name.strip() or not isinstance(spec, dict):
                raise SettingsError(f"setting users: {name!r} must map a user name to an object")
            if spec.get("password"):
                self._passwords[name] = str(spec["password"])
            if spec.get("admin"):
                self._admins.add(name)
            for key in spec.get("api_keys", []):
                self._by_key[str(key)] = User(name, bool(spec.get("admin")))
                self._named_keys.add(str(key))
        admin_keys = set(api_keys.get("*", []))
        for listed in api_keys.values():
            for key in listed:
                self._by_key.setdefault(key, User(key_user_name(key), key in admin_keys))
        if app_login:
            self._passwords.setdefault(app_login[0], app_login[1])
            self._admins.add(app_login[0])
        self.keys_required = bool(self._by_key)

    @classmethod
    def from_settings(cls, settings) -> Users:
        def parsed(text: str, name: str) -> dict:
            try:
                value = json.loads(text) if text else {}
            except json.JSONDecodeError as exc:
                raise SettingsError(f"setting {name}: not valid JSON ({exc})") from None
            if not isinstance(value, dict):
                raise SettingsError(f"setting {name}: expected a JSON object")
            return value

        password = os.environ.get("ASSISTANT_APP_PASSWORD")
        login = (os.environ.get("ASSISTANT_APP_USER", "assistant"), password) if password else None
        return cls(parsed(settings.users, "users"), parsed(settings.api_keys, "api_keys"), login)

    # ---- the app ------------------------------------------------------------------------------
    @property
    def logins_required(self) -> bool:
        return bool(self._passwords)

    def check_login(self, name: str, password: str) -> bool:
        expected = self._passwords.get(name)
        return expected is not None and hmac.compare_digest(expected.encode(), (password or "").encode())

    def login_user(self, name: str | None) -> User | None:
        """The app's user once logged in (None: no logins configured, the local user)."""
        if not name or not self.logins_required:
            return LOCAL
        return User(name, name in self._admins)

    # ---- HTTP ---------------------------------------------------------------------------------
    def key_user(self, key: str | None) -> User | None:
        """The user a key acts as; None for an unknown key (or no keys configured: the local user)."""
        if not key:
            return None
        for known, user in self._by_key.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                return user
        return None

    def named_keys(self) -> set[str]:
        """Keys from `users` (they open every domain, as their user)."""
        return set(self._named_keys)


def is_admin(user: User | None) -> bool:
    """The local user (no logins, no keys) may do what an admin may."""
    return user is LOCAL or user.admin


def viewer(user: User | None) -> str | None:
    """The name searches run as: the store shows this user's private documents too."""
    return None if user is None else user.name
