"""Federated LoRA fine-tuning with Flower: each centre trains on its own data; only adapter weights travel.

- ``config``: the federated knobs (centres, rounds, local steps, strategy, dropout tolerance, central DP);
- ``centres``: non-IID, unequal centres from the shared data (publication-year bands);
- ``client``: the ClientApp (local LoRA steps with optional DP-SGD, per-centre epsilon composed over rounds);
- ``server``: the ServerApp (FedAvg / FedProx / FedAdam, optional central DP, per-round held-out evaluation);
- ``run``: one run end to end (simulated or deployed), exported and registered like centralised runs;
- ``inprocess``: the same messages delivered in the calling process (no Ray start-up), for tests and small runs;
- ``deploy`` + ``app/pyproject.toml``: the ServerApp that ``flwr run`` submits to a deployed SuperLink, whose
  SuperNodes are started at each centre by ``manage.py federated_node``;
- ``deployment``: the coordinator of a deployed run (engine "deployment"): submit, stream the rounds, stop;
- ``certs``: the federation's CA, the SuperLink's TLS certificate and the centres' node-authentication keys.
"""
