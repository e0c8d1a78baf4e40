# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module options as typed objects: the one place that reads Ansible's params mapping.

A module calls ``typed(SomeOptions, module.params)`` once and hands the result to module_utils, so the rest
of the code reads ``options.start_timeout``, never ``params["start_timeout"]``, and a typo is an
AttributeError instead of a silent None. Option classes are frozen dataclasses with no defaults: defaults
live only in the argument spec, which has already applied them when ``typed`` runs (a key the mapping lacks
is None, as Ansible reports an unset option without a default).

A field annotated with another option class (or ``Optional[...]`` of one, or ``List[...]`` of them) takes a
suboption dict and is converted the same way.
"""

from __future__ import annotations

import dataclasses
import typing


def typed(cls, params):
    """An instance of the dataclass ``cls`` from the mapping ``params`` (extra keys are ignored)."""
    hints = _hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        values[field.name] = _convert(hints[field.name], (params or {}).get(field.name))
    return cls(**values)


def _hints(cls):
    cache = cls.__dict__.get("_typed_hints")
    if cache is None:
        cache = typing.get_type_hints(cls)
        cls._typed_hints = cache  # dataclass(frozen) forbids instance writes, not class ones
    return cache


def _convert(hint, value):
    if value is None:
        return None
    target = _option_class(hint)
    if target is not None and isinstance(value, dict):
        return typed(target, value)
    element = _list_element(hint)
    if element is not None and isinstance(value, list):
        return [typed(element, item) if isinstance(item, dict) else item for item in value]
    return value


def _unwrap_optional(hint):
    if typing.get_origin(hint) is typing.Union:
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _option_class(hint):
    hint = _unwrap_optional(hint)
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _list_element(hint):
    hint = _unwrap_optional(hint)
    if typing.get_origin(hint) in (list, typing.List):
        args = typing.get_args(hint)
        if args and _option_class(args[0]):
            return args[0]
    return None


def with_defaults(spec, params):
    """``params`` completed with the argument spec's defaults, as AnsibleModule would complete them, for code that calls
    another module's entry point without Ansible (a drill takes a dump with dump_set's options). Suboptions are completed
    where a dict is given; values are taken as they are (they come from code, not from a user)."""
    done = {}
    for name, option in spec.items():
        value = (params or {}).get(name, option.get("default"))
        if isinstance(value, dict) and option.get("options"):
            value = with_defaults(option["options"], value)
        elif isinstance(value, list) and option.get("options") and option.get("elements") == "dict":
            value = [with_defaults(option["options"], item) if isinstance(item, dict) else item for item in value]
        done[name] = value
    return done
