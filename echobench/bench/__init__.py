"""`echobench bench …`: one module per benchmark."""
