"""Applications give every Shoptet request its auth: premium token or OAuth addon access token."""
