"""DCR templates: refraction, DCR models and the template task."""
