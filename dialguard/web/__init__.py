"""The console and the API (`dialguard web`, issue 15): dialguard/web/app.py."""
