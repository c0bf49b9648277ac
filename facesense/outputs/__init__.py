"""What a job leaves behind: result rows and summaries, gallery thumbnails, webhooks.

May import the core's settings, errors, storage, state and inputs (netguard for webhooks).
"""
