"""Jobs: the durable store, the worker and the service the watcher and OSC server use."""
