"""Redis storage: connection (one server, Sentinel, Cluster), key layout, scripts and stores."""
