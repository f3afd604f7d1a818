from anchor_ot.cli import main

main()
