"""Results of reconstructions: tables and files, submission-format volumes, scoring folders."""
