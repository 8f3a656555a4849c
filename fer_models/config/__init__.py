"""The typed run configuration: keys, defaults, checks and the DP recipe's resolved hyper-parameters.

``RunConfig`` (run_config.py) is the one resolved config; dp_checks / secagg_checks refuse unsafe
combinations; recipe.py resolves what a client's local round uses; dp_trust.py names whom each DP
mode trusts. Imported as ``from fer_models.config import RunConfig, ConfigError``.
"""

from fer_models.config.errors import ConfigError
from fer_models.config.run_config import (
                                          SERVER_LR_DEFAULTS,
                                          ConfigValue,
                                          RunConfig,
                                          check_values,
                                          choices_of,
                                          default_flat,
                                          describe_keys,
                                          local_work_key,
)

__all__ = ["SERVER_LR_DEFAULTS", "ConfigError", "ConfigValue", "RunConfig", "check_values", "choices_of", "default_flat",
           "describe_keys", "local_work_key"]
