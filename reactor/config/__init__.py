"""reactor.config: YAML -> frozen, typed config; units; file:line:column errors.

Load once with :func:`load_config` (or :func:`load_config_text`); every problem of a file
is reported at once in one :class:`~reactor.errors.ConfigError`, each issue with its
``file:line:column``, key path, the value and what would be accepted. See
docs/configuration.md for the reference.
"""

from __future__ import annotations

from reactor.config.damon import DamonSection, Kdamond, MonitoringContext, Scheme
from reactor.config.loader import (
    json_schema,
    load_config,
    load_config_text,
    validate_files,
    validate_text,
)
from reactor.config.model import (
    ApiConfig,
    CgroupSourceConfig,
    Config,
    ControllerConfig,
    ExcludeConfig,
    FragmentationSourceConfig,
    GoalConfig,
    IntervalsGoalConfig,
    MetricsConfig,
    MonitorConfig,
    PolicyConfig,
    PsiSourceConfig,
    PsiTriggerConfig,
    QuotaConfig,
    ReactorSection,
    RegionsConfig,
    SelectorConfig,
    Signals,
    SourceConfig,
    TargetsConfig,
    TiersSourceConfig,
)
from reactor.errors import ConfigError, ConfigIssue

__all__ = (
    "ApiConfig",
    "CgroupSourceConfig",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "ControllerConfig",
    "DamonSection",
    "ExcludeConfig",
    "FragmentationSourceConfig",
    "GoalConfig",
    "IntervalsGoalConfig",
    "Kdamond",
    "MetricsConfig",
    "MonitorConfig",
    "MonitoringContext",
    "PolicyConfig",
    "PsiSourceConfig",
    "PsiTriggerConfig",
    "QuotaConfig",
    "ReactorSection",
    "RegionsConfig",
    "Scheme",
    "SelectorConfig",
    "Signals",
    "SourceConfig",
    "TargetsConfig",
    "TiersSourceConfig",
    "json_schema",
    "load_config",
    "load_config_text",
    "validate_files",
    "validate_text",
)
