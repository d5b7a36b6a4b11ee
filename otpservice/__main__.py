from otpservice.cli import main

main()
