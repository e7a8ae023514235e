"""Knowledge domain: turning documents into the chunks that become knowledge-table rows."""
