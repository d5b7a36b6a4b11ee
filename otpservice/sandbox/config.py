"""Configuration of the Autocall sandbox: the seeded example account, timings, and faults on demand.

The seed is the reference's own example account, so its curl examples run verbatim against the
sandbox with only the host replaced.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal, get_args

# The reference's published example credentials, not secrets.
EXAMPLE_SECRET_KEY = "30511f666-f888-411b-a6e0-11111fb6gg7a"  # noqa: S105
EXAMPLE_TOKEN = "1ebe8f88MzA1MTNkZjMtZjc3My00MTmY"  # noqa: S105
EXAMPLE_CAMPAIGN_ID = "1"
EXAMPLE_OTP_TEMPLATE = "template_otp_1"

# Where the callback body puts the call record.
CallbackShape = Literal["cdr", "data", "legacy"]
# Where the callback carries ``callback_apikey``.
CallbackApiKeyPlacement = Literal["authorization", "bearer", "x-api-key", "apikey", "body", "none"]


@dataclass(slots=True)
class ProviderFaults:
    """Faults the sandbox injects into its API answers (the five provider endpoints)."""

    latency_seconds: float = 0.0
    error_rate: float = 0.0  # fraction of API requests answered with error_status
    error_status: int = 503
    hang: bool = False  # hold API requests open until the client gives up
    # place the call, then hold its answer until the client gives up: the call rings, its id is lost
    lose_answer: bool = False


@dataclass(slots=True)
class CallbackFaults:
    """Faults on the callbacks the sandbox posts when a call ends."""

    drop: bool = False
    duplicate: int = 0  # extra copies of each callback
    delay_seconds: float = 0.0
    reorder: bool = False  # hold callbacks and release them newest first on flush


@dataclass(slots=True)
class SandboxConfig:
    """Everything that shapes the sandbox's behaviour; mutable at run time via ``/_sandbox/``."""

    secret_keys: tuple[str, ...] = (EXAMPLE_SECRET_KEY,)
    token_lifetime_seconds: float = 15552000.0
    ring_seconds: float = 0.0
    talk_seconds: float = 0.0
    callback_shape: CallbackShape = "cdr"
    callback_apikey_in: CallbackApiKeyPlacement = "authorization"
    provider_faults: ProviderFaults = field(default_factory=ProviderFaults)
    callback_faults: CallbackFaults = field(default_factory=CallbackFaults)
    log_spoken_text: bool = False  # dev mode prints each "spoken" call so a developer can hear the code


CALLBACK_SHAPES: tuple[str, ...] = get_args(CallbackShape)
CALLBACK_APIKEY_PLACEMENTS: tuple[str, ...] = get_args(CallbackApiKeyPlacement)
_CHOICES: dict[str, tuple[str, ...]] = {
    "callback_shape": CALLBACK_SHAPES,
    "callback_apikey_in": CALLBACK_APIKEY_PLACEMENTS,
}
_FAULT_GROUPS = ("provider_faults", "callback_faults")
# Secret keys are credentials: never shown by, nor changeable through, the admin endpoint.
_HIDDEN = frozenset({"secret_keys"})


class ConfigError(ValueError):
    """A configuration change that the sandbox refuses."""


def config_as_dict(config: SandboxConfig) -> dict[str, Any]:
    """The config as the admin endpoint shows it (JSON-ready, without secret keys)."""
    return {key: value for key, value in asdict(config).items() if key not in _HIDDEN}


def apply_config_patch(config: SandboxConfig, patch: object) -> None:
    """Apply a partial update in place, all or nothing; raise ConfigError on any bad key or value."""
    if not isinstance(patch, dict):
        raise ConfigError("the body must be a JSON object")
    candidate = copy.deepcopy(config)
    for key, value in patch.items():
        if key in _FAULT_GROUPS:
            if not isinstance(value, dict):
                raise ConfigError(f"{key} must be an object")
            group = getattr(candidate, key)
            for sub_key, sub_value in value.items():
                _set_checked(group, sub_key, sub_value, label=f"{key}.{sub_key}")
        elif key in _HIDDEN:
            raise ConfigError(f"{key} cannot be changed at run time")
        else:
            _set_checked(candidate, key, value, label=str(key))
    validate_config(candidate)
    # Copy field by field so callers holding the live config (or its fault objects) see the change.
    for item in fields(config):
        if item.name in _FAULT_GROUPS:
            live_group, new_group = getattr(config, item.name), getattr(candidate, item.name)
            for sub_item in fields(live_group):
                setattr(live_group, sub_item.name, getattr(new_group, sub_item.name))
        else:
            setattr(config, item.name, getattr(candidate, item.name))


def validate_config(config: SandboxConfig) -> None:
    """Raise ConfigError when a value is out of range."""
    provider, callbacks = config.provider_faults, config.callback_faults
    non_negative = {
        "ring_seconds": config.ring_seconds,
        "talk_seconds": config.talk_seconds,
        "provider_faults.latency_seconds": provider.latency_seconds,
        "callback_faults.delay_seconds": callbacks.delay_seconds,
        "callback_faults.duplicate": callbacks.duplicate,
    }
    for label, number in non_negative.items():
        if number < 0:
            raise ConfigError(f"{label} must not be negative")
    if config.token_lifetime_seconds <= 0:
        raise ConfigError("token_lifetime_seconds must be positive")
    if not 0.0 <= provider.error_rate <= 1.0:
        raise ConfigError("provider_faults.error_rate must be between 0 and 1")
    if not 400 <= provider.error_status <= 599:
        raise ConfigError("provider_faults.error_status must be an HTTP error status (400-599)")
    for name, allowed in _CHOICES.items():
        if getattr(config, name) not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}")


def _set_checked(target: object, key: object, value: object, *, label: str) -> None:
    # Annotations are strings here (postponed evaluation), so the declared type is matched by name.
    declared = {item.name: str(item.type) for item in fields(target)} if is_dataclass(target) else {}
    if not isinstance(key, str) or key not in declared or key in _HIDDEN or key in _FAULT_GROUPS:
        raise ConfigError(f"unknown setting {label}")
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if key in _CHOICES:
        ok = isinstance(value, str)
    elif declared[key] == "bool":
        ok = isinstance(value, bool)
    elif declared[key] == "int":
        ok = isinstance(value, int) and is_number
    else:
        ok = is_number
        value = float(value) if isinstance(value, int | float) else value
    if not ok:
        raise ConfigError(f"{label} has the wrong type")
    setattr(target, key, value)


def reset_faults(config: SandboxConfig) -> None:
    """Turn every provider and callback fault off, in place."""
    for live_group, default_group in (
        (config.provider_faults, ProviderFaults()),
        (config.callback_faults, CallbackFaults()),
    ):
        for item in fields(live_group):
            setattr(live_group, item.name, getattr(default_group, item.name))
