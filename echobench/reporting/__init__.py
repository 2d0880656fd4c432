"""Reports from stored records: accuracy tables, Table 4, the runtime report, the paper's reference
numbers, the dry-run cost model."""
