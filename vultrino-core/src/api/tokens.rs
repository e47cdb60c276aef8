//! `POST/GET /v1/tokens`, `DELETE /v1/tokens/{id}`: agent tokens ([`crate::auth::tokens`]).

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::reply::{empty, json_response};
use crate::app::App;
use crate::auth::NewToken;
use crate::error::{Error, ErrorKind, Result};
use crate::input::parse_json;

impl App {
    /// The token routes: `id` is `None` for `/v1/tokens`, the token's id for `/v1/tokens/{id}`.
    pub(super) async fn tokens_route(
        &self,
        req: &Request<Bytes>,
        id: Option<&str>,
    ) -> Result<Response<Bytes>> {
        let who = self.authenticator().principal(req).await?;
        let tokens = self.api_keys().tokens();
        match (req.method(), id) {
            (&Method::POST, None) => {
                let input: NewToken = parse_json(req.body())?;
                let created = tokens.mint(&who, input).await?;
                Ok(json_response(StatusCode::CREATED, &json!(created)))
            }
            (&Method::GET, None) => {
                let listed = tokens.list(&who).await?;
                Ok(json_response(StatusCode::OK, &json!({"tokens": listed})))
            }
            (&Method::DELETE, Some(id)) => {
                tokens.revoke(&who, id).await?;
                Ok(empty(StatusCode::NO_CONTENT))
            }
            _ => Err(Error::new(
                ErrorKind::MethodNotAllowed,
                "method not allowed on this route",
            )),
        }
    }
}
