"""Hotlists, partial plates and geofences that the alert topology matches reads against."""
