"""Models arrive with their issue; the app is registered so that migrations and admin find it."""
