"""Where runs live: the trial store (SQLite, PostgreSQL), the LangGraph checkpointer beside it, the store
locator, and checkpoint pruning. Imports only the core."""

from collm_nas.storage.checkpointer import Checkpointer
from collm_nas.storage.history import RunHistory
from collm_nas.storage.locator import StoreLocator, is_postgres, mask_url, parse_store, spool_dir
from collm_nas.storage.sql import BaseTrialStore, SQLiteTrialStore, open_trial_store

__all__ = ["BaseTrialStore", "Checkpointer", "RunHistory", "SQLiteTrialStore", "StoreLocator", "is_postgres",
           "mask_url", "open_trial_store", "parse_store", "spool_dir"]
