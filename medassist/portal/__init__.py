"""The research portal: server-rendered pages for researchers over the same services as the API."""
