from anomaly_vae.cli import main

main()
