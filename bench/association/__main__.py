"""``python -m bench.association``: association quality on crowded multi-visit fields."""

from bench.association.fields import main

main()
