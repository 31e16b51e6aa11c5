"""Run configs: dataclasses whose attribute docstrings become the CLI's --help, loaded strictly from YAML."""

from obliviate.config.audit import AuditConfig
from obliviate.config.edit import EditConfig
from obliviate.config.loader import ConfigError, from_dict, load_yaml
from obliviate.config.locate import LocateConfig
from obliviate.config.run import RunConfig

__all__ = ["AuditConfig", "ConfigError", "EditConfig", "LocateConfig", "RunConfig", "from_dict", "load_yaml"]
