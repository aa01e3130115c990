//! `grpc_health <addr> [service]`: asks the standard gRPC health service and exits 0 when
//! the answer is SERVING, 1 otherwise (the docker-compose healthcheck of both services).

use std::{process::ExitCode, time::Duration};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next() else {
        eprintln!("usage: grpc_health <host:port> [service]");
        return ExitCode::from(2);
    };
    let service = args.next().unwrap_or_default();
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let mut client = HealthClient::new(channel);
        let status = client
            .check(HealthCheckRequest { service })
            .await?
            .into_inner()
            .status;
        Ok::<_, Box<dyn std::error::Error>>(status)
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(status)) if status == ServingStatus::Serving as i32 => ExitCode::SUCCESS,
        Ok(Ok(status)) => {
            eprintln!("{addr}: status {status}");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("{addr}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("{addr}: no answer within 3 s");
            ExitCode::FAILURE
        }
    }
}
