from toolkit.cli.app import app

app()
