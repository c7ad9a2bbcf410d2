"""A terminal that shows what the user needs: quiet, readable logs for every command line.

mmengine's console handler prints everything its log file gets: the system environment, the
whole config (hundreds of lines) and the hook table on every run, next to deprecation notes of
mmengine's own internals; third-party libraries add warnings the user cannot act on. Here:

- :class:`ProjectRunner` (the ``Runner`` that ``build_runner`` builds) replaces the console
  handler of its logger by a :class:`ConsoleHandler`, which
  - keeps the environment, the config dump and the hook table out of the terminal (they stay in
    the log file ``WORK_DIR/<timestamp>/<timestamp>.log``; ``--cfg-options console_verbose=True``
    shows them again),
  - drops mmengine's notes about its own deprecated internals (``FileClient``,
    ``HardDiskBackend``), which its checkpoint hook triggers, not the user,
  - writes through ``tqdm.write``, so a progress bar is cleared before a log line and redrawn
    after it instead of the two running into one line,
  - writes to the ``sys.stdout`` of the moment (not the one of the first run in the process, as
    mmengine's handler does: a second tool run, e.g. in tests, prints where it is expected);
- :func:`quiet_third_party_warnings` filters warnings that are about a library's own code:
  spconv's "non-tuple sequence for multidimensional indexing" (PyTorch deprecation inside
  spconv) and torch.fx's ``is_fx_tracing`` note (spconv calls it). Warnings that concern the
  user's data or settings stay - ``ops.voxelize.VoxelizeWarning`` (points or voxels dropped)
  among them.
"""
from __future__ import annotations

import logging
import sys
import warnings

from mmengine.runner import Runner

__all__ = ["ConsoleHandler", "ProjectRunner", "quiet_third_party_warnings", "VERBOSE_ONLY",
           "NOT_THE_USERS_CONCERN"]

#: Console records (message starts) shown only with ``console_verbose=True``; always in the file.
VERBOSE_ONLY = ("\n" + "-" * 60 + "\nSystem environment:", "Config:\n",
                "Hooks will be executed in the following order")
#: Console records (message starts) about mmengine's own deprecated internals.
NOT_THE_USERS_CONCERN = ('"FileClient" will be deprecated', '"HardDiskBackend" is the alias')

_QUIETED = False


def quiet_third_party_warnings() -> None:
    """Filter library-internal warnings (see the module docstring). Idempotent."""
    global _QUIETED
    if _QUIETED:
        return
    warnings.filterwarnings("ignore", message=r"Using a non-tuple sequence for multidimensional "
                            r"indexing is deprecated", category=UserWarning, module=r"spconv(\.|$)")
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    _QUIETED = True


class ConsoleHandler(logging.StreamHandler):
    """mmengine's console handler, made quiet and tqdm-aware (module docstring)."""

    def __init__(self, like: logging.Handler | None = None, verbose: bool = False):
        super().__init__()
        self.verbose = verbose
        if like is not None:
            self.setLevel(like.level)
            self.setFormatter(like.formatter)
            for f in like.filters:
                self.addFilter(f)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns one; the current stdout is used
        pass

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith(NOT_THE_USERS_CONCERN):
            return False
        if not self.verbose and msg.startswith(VERBOSE_ONLY):
            return False
        return super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stdout)
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def use_console_handler(logger: logging.Logger, verbose: bool = False) -> None:
    """Replace ``logger``'s stdout stream handler(s) by a :class:`ConsoleHandler`."""
    for h in list(logger.handlers):
        if isinstance(h, ConsoleHandler):
            h.verbose = verbose
            return
        if type(h) is logging.StreamHandler:  # not the FileHandler subclass
            logger.removeHandler(h)
            logger.addHandler(ConsoleHandler(h, verbose))
            return


class ProjectRunner(Runner):
    """mmengine's Runner with the quiet console (module docstring)."""

    def build_logger(self, log_level="INFO", log_file=None, **kwargs):
        logger = super().build_logger(log_level=log_level, log_file=log_file, **kwargs)
        cfg = getattr(self, "cfg", None)
        use_console_handler(logger, verbose=bool(cfg.get("console_verbose", False))
                            if cfg is not None else False)
        quiet_third_party_warnings()
        return logger
