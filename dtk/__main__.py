from dtk.cli.main import main

main()
