from smartset.cli import main

main()
