"""Federated LoRA fine-tuning with Flower: each centre trains on its own data; only adapter weights travel.

- ``config``: the federated knobs (centres, rounds, local steps, strategy, dropout tolerance, central DP);
- ``centres``: non-IID, unequal centres from the shared data (publication-year bands);
- ``client``: the ClientApp (local LoRA steps with optional DP-SGD, per-centre epsilon composed over rounds);
- ``server``: the ServerApp (FedAvg / FedProx / FedAdam, optional central DP, per-round held-out evaluation);
- ``run``: one run end to end in Flower's simulation engine, exported and registered like centralised runs;
- ``inprocess``: the same messages delivered in the calling process (no Ray start-up), for tests and small runs;
- ``deploy`` + ``app/pyproject.toml``: the ServerApp that ``flwr run`` submits to a deployed SuperLink, whose
  SuperNodes are started at each centre by ``manage.py federated_node``.
"""
