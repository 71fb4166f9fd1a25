"""The core: run loop, run context, config, registry, GPU locks, training engine, progress, errors,
atomic writes, logs. It imports nothing from tasks/, data_tools/ or the apps (import-linter checks it)."""
