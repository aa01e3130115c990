//! The contract: `/openapi.json` is OpenAPI 3.1, and every operation it says needs a
//! bearer token refuses a request without one or with a wrong one.

use reqwest::{Method, StatusCode};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use crate::helpers::{send, spawn_shop};

#[sqlx::test(migrations = false)]
async fn every_bearer_operation_refuses_a_missing_or_wrong_token(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let shop = spawn_shop(db).await;
    let document = send(shop.request(Method::GET, "/openapi.json")).await;
    assert_eq!(document.status, StatusCode::OK);
    assert_eq!(document.body["openapi"], "3.1.0");
    let paths = document.body["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{goods_id}", "1")
            .replace("{order_sn}", "sn-1");
        for (method, operation) in item.as_object().expect("an item") {
            let bearer = operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
            if !bearer {
                continue;
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            // A token signed with another key: valid shape, wrong signature.
            let forged = gateway::auth::Tokens::new(b"someone else's key, 32 bytes long", "shop")
                .expect("a key")
                .issue(1, std::time::Duration::from_secs(60))
                .expect("signs")
                .0;
            for token in [None, Some(forged.as_str()), Some("x.y.z")] {
                let mut request = shop
                    .request(method.clone(), &concrete)
                    .header("content-type", "application/json")
                    .body("{}");
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let answer = send(request).await;
                assert_eq!(
                    answer.status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} with {token:?}: {answer:?}"
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} bearer operations in the document"
    );
    shop.stop().await;
}
