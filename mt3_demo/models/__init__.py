"""Model adapters. Each adapter module exposes ``SPEC`` (a :class:`base.ModelSpec`)."""
