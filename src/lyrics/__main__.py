from lyrics.cli import main

main()
