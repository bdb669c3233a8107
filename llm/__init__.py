"""LLM plumbing: how the roles talk to models.

* :mod:`.chat_models`: per-role settings (flags, ``COLLM_NAS_<ROLE>_*``, ``COLLM_NAS_LLM_*``), the chat model
  factory, retries and the sorting of failures;
* :mod:`.structured`: structured answers under the strongest decoding a server offers (GBNF grammar, JSON
  schema, tool calling, tolerant parsing);
* :mod:`.session`: which LLM a run talks to (``auto``, ``endpoint``, ``local``, ``none``) and its chat clients
  for the run's lifetime;
* :mod:`.local_server`, :mod:`.llama_server`, :mod:`.server_watch`, :mod:`.gguf_info`: the embedded llama.cpp
  server (SmolLM2-135M or any GGUF chat model), started, watched and restarted by the run;
* :mod:`.model_files`: what a ``--llm-model`` value names (a GGUF file or a tuned ranker's folder).

Nothing here knows a search strategy; the roles (:mod:`collm_nas.agents`) use it.
"""
