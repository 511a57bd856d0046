"""Options from flags, the environment and a TOML file, validated by one pydantic model per command.

A flag beats `CLOACA_SANDBOX_<OPTION>`, which beats the config file (`--config
FILE` or `CLOACA_SANDBOX_CONFIG`; the `[serve]` table for the service, `[client]`
for client commands), which beats the model's default. Every option is named
the same everywhere: the field `call_timeout` is `--call-timeout`,
`CLOACA_SANDBOX_CALL_TIMEOUT` and `call_timeout` in the file.

`load_options` returns the validated model or raises `OptionsError`, whose
lines each name one bad option, where its value came from, and what it
accepts; the CLI prints them and exits 2. `add_option_flags` makes the argparse
flags from the same fields, their help showing each default.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "CLOACA_SANDBOX_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"

O = TypeVar("O", bound="Options")

# Set while load_options builds a model: whether to read the environment, and which config file.
_reading: ContextVar[tuple[bool, Path | None]] = ContextVar("options_reading", default=(False, None))


class OptionsError(ValueError):
    """Options that cannot be used; `lines` says, one line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class Options(BaseSettings):
    """Base of each command's options: the environment and a config file table as sources.

    Built directly (`ServiceConfig(listen=...)`), a model holds exactly what it is given;
    `load_options` adds the environment and the config file beneath the flags.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="forbid", frozen=True)

    config_section: ClassVar[str] = ""  # the config file's table these options are read from

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        read_environment, config_file = _reading.get()
        if not read_environment:
            return (init_settings,)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file is not None:
            sources.append(ConfigFileSource(settings_cls, config_file, cls.config_section))
        return tuple(sources)


def config_file_path(flags: dict[str, Any]) -> Path | None:
    """The config file: the --config flag, else CLOACA_SANDBOX_CONFIG, else none."""
    given = flags.get("config_file") or os.environ.get(CONFIG_ENV)
    return Path(given).expanduser() if given else None


class ConfigFileSource(PydanticBaseSettingsSource):
    """One table of a TOML config file; a file that cannot be read or parsed is an OptionsError."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path, section: str) -> None:
        super().__init__(settings_cls)
        self.path = path
        self.section = section
        self.values = read_config_table(path, section)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


def read_config_table(path: Path, section: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise OptionsError([f"the config file {path} cannot be read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise OptionsError([f"the config file {path} is not valid TOML: {exc}"]) from None
    unknown = sorted(set(document) - {"serve", "client"})
    if unknown:
        raise OptionsError([f"the config file {path} has {', '.join(repr(name) for name in unknown)} at its top "
                            "level; it takes only the tables [serve] and [client]"])
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise OptionsError([f"the config file {path}: {section!r} must be a table ([{section}])"])
    return table


def load_options(model: type[O], flags: dict[str, Any]) -> O:
    """The options from `flags` (given flags only, by field name), the environment and the config file."""
    config_file = config_file_path(flags)
    given = {name: value for name, value in flags.items() if name in model.model_fields}
    reading = _reading.set((True, config_file))
    try:
        return model(**given)
    except ValidationError as exc:
        raise OptionsError(explain(exc, model, set(given), config_file)) from None
    finally:
        _reading.reset(reading)


def explain(error: ValidationError, model: type[Options], flags: set[str], config_file: Path | None) -> list[str]:
    """One line per bad option: where its value came from, what was wrong, and the value given."""
    lines = []
    for problem in error.errors(include_url=False):
        name = str(problem["loc"][0]) if problem["loc"] else ""
        message = problem["msg"].removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        if problem["type"] == "extra_forbidden":
            lines.append(f"the config file {config_file} has an unknown option {name!r} in [{model.config_section}] "
                         f"(the options are those of `cloaca-sandbox {model.config_section} --help`, "
                         "with '_' for '-')")
            continue
        if not name:  # a check across options: its message names them
            lines.append(message)
            continue
        where = option_source(name, flags, config_file, model.config_section)
        shown = problem.get("input")
        got = f" (got {shown!r})" if isinstance(shown, (str, int, float, bool)) and not _secret(model, name) else ""
        lines.append(f"{where}: {message}{got}")
    return lines


def _secret(model: type[Options], name: str) -> bool:
    """An option whose value is never repeated back (it may hold a password)."""
    field = model.model_fields.get(name)
    extra = field.json_schema_extra if field is not None and isinstance(field.json_schema_extra, dict) else {}
    return bool(extra.get("secret"))


def option_source(name: str, flags: set[str], config_file: Path | None, section: str) -> str:
    """How the user gave option `name`: the flag, the environment variable or the config file's key."""
    if name in flags:
        return flag_name(name)
    if os.environ.get(env_name(name)):
        return env_name(name)
    if config_file is not None:
        return f"{name} in [{section}] of {config_file}"
    return flag_name(name)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def describe_default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if hasattr(value, "value"):  # an enum
        value = value.value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def add_option_flags(parser: argparse.ArgumentParser, model: type[Options]) -> None:
    """A flag per field of `model`, its help giving the environment variable and the default.

    Flags default to absent (argparse.SUPPRESS), so only the flags given take precedence
    over the environment and the config file. Values stay strings: the model validates them.
    """
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        names = [flag_name(name), *extra.get("aliases", ())]  # type: ignore[misc]
        help_text = f"{field.description or ''} (default: {describe_default(field)}; env {env_name(name)})".strip()
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if field.annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = extra.get("metavar", "VALUE")
            if extra.get("repeatable"):
                kwargs["action"] = "append"
        parser.add_argument(*names, **kwargs)
    parser.add_argument("--config", dest="config_file", metavar="FILE", default=argparse.SUPPRESS,
                        help=f"a TOML file whose [{model.config_section}] table gives options; flags and the "
                             f"environment override it (default: none; env {CONFIG_ENV})")
