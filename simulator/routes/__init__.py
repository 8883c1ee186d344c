"""HTTP routes, one module per Shoptet resource, plus the OAuth server and the admin API."""
