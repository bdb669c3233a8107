"""Settings read from the environment and ``.env`` (prefix ``COLLM_NAS_``).

CLI flags and API arguments override them; ``.env.example`` lists them all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from collm_nas.core.errors import UserError

# Where the shared NAS-Bench-201 table is found when no setting names it:
# beside the working directory's parent, or beside this checkout.
_REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TABLE_CANDIDATES = (
    Path("../shared/data/nb201.csv.gz"),
    _REPO_ROOT.parent / "shared" / "data" / "nb201.csv.gz",
)
DB_FILENAME = "collm-nas.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COLLM_NAS_", env_file=".env", extra="ignore")

    runs_dir: Path = Path("runs")
    nb201_table: Path | None = None
    progress: Literal["auto", "always", "never"] = "auto"
    # Folder of the train evaluator's data sets (CIFAR python folders, torchvision data, image folders).
    data_dir: Path | None = None
    # Parallel evaluation (search --backend / --workers; stored with each run).
    backend: Literal["serial", "process", "ray"] = "serial"
    workers: int | None = None
    # Where runs are stored (--store): a postgres:// URL shared by a team, or a SQLite file
    # (default: collm-nas.db in the runs folder).
    store: str | None = None
    # Checkpoints kept besides the last of every round (older ones are pruned as a run goes on).
    keep_checkpoints: int = 20
    # The dashboard's token: every request must carry it (when unset, only a dashboard listening beyond
    # loopback asks for one, made up and printed at start).
    dashboard_token: str | None = None
    # Trials the dashboard reads ahead at start, newest runs first, so that their pages open warm (0: none).
    dashboard_preload: int = 50_000
    # For scripts (--require-llm): exit with code 3 when a run's LLM answered no round meant for it ("some"),
    # or fewer rounds than were meant for it ("all"); "off" only says so.
    require_llm: Literal["off", "some", "all"] = "off"
    # What collm-nas computes once per machine and reuses (the zero-cost proxy scores of --prior proxy:NAME):
    # default $XDG_CACHE_HOME/collm-nas, else ~/.cache/collm-nas.
    cache_dir: Path | None = None

    def table_path(self, override: str | Path | None = None) -> str:
        """The table path to use: the override, the setting, or the first default that exists."""
        if override is not None:
            return str(Path(override).expanduser())
        if self.nb201_table is not None:
            return str(self.nb201_table.expanduser())
        for candidate in DEFAULT_TABLE_CANDIDATES:
            if candidate.is_file():
                return str(candidate.resolve())
        return str(DEFAULT_TABLE_CANDIDATES[0])

    def cache_path(self) -> Path:
        """The folder of what is computed once per machine (``COLLM_NAS_CACHE_DIR``)."""
        if self.cache_dir is not None:
            return self.cache_dir.expanduser()
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "collm-nas"

    def db_path(self, runs_dir: str | Path | None = None) -> Path:
        return Path(runs_dir or self.runs_dir).expanduser() / DB_FILENAME

    def store_url(self, runs_dir: str | Path | None = None, store: str | None = None) -> str:
        """The store to use: ``store`` (--store), else COLLM_NAS_STORE, else the SQLite file in the runs folder.

        ``collm_nas.storage.locator.parse_store`` reads it; the CLI, the API, LangGraph Studio and the
        dashboard all go through here, so one setting governs them all.
        """
        chosen = store if store else self.store
        return str(chosen) if chosen else str(self.db_path(runs_dir))


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as e:
        err = e.errors()[0]
        name = "COLLM_NAS_" + str(err["loc"][0]).upper() if err["loc"] else "a COLLM_NAS_ setting"
        raise UserError(f"setting {name} is invalid: {err['msg']}") from None
