"""What every step shares: the data contract, typed configs, URI storage, manifests, logging."""
