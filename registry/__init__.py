"""Pure OCI registry library: no Django models, no settings at import time; configuration is passed in."""
