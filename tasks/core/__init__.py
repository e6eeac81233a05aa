"""What every task uses: the task framework, id packing and thread helpers."""
