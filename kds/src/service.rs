//! The gRPC service `kds.v1.KDS` with its two bidirectional streams, written
//! against tonic's codec directly (there is no .proto to generate from: the
//! messages are Envoy's delta xDS ones from `xds-api`).
//!
//! - `GlobalToZone`: the zone sends `DeltaDiscoveryRequest`s, the global
//!   answers with `DeltaDiscoveryResponse`s (Mesh, TrafficPermission, other
//!   zones' ZoneIngresses).
//! - `ZoneToGlobal`: reversed; the zone publishes (Dataplane, ZoneIngress) on
//!   the connection it dialled, and the global subscribes, ACKs and NACKs.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio_stream::Stream;
use tonic::body::BoxBody;
use tonic::codec::ProstCodec;
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};

pub const SERVICE_NAME: &str = "kds.v1.KDS";
const GLOBAL_TO_ZONE: &str = "/kds.v1.KDS/GlobalToZone";
const ZONE_TO_GLOBAL: &str = "/kds.v1.KDS/ZoneToGlobal";

pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What the global implements.
#[tonic::async_trait]
pub trait Kds: Send + Sync + 'static {
    async fn global_to_zone(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<ResponseStream<DeltaDiscoveryResponse>>, Status>;

    async fn zone_to_global(
        &self,
        request: Request<Streaming<DeltaDiscoveryResponse>>,
    ) -> Result<Response<ResponseStream<DeltaDiscoveryRequest>>, Status>;
}

/// The tower service tonic's router serves.
pub struct KdsServer<T> {
    inner: Arc<T>,
    max_message_bytes: usize,
}

impl<T> KdsServer<T> {
    pub fn new(inner: Arc<T>, max_message_bytes: usize) -> Self {
        Self {
            inner,
            max_message_bytes,
        }
    }
}

impl<T> Clone for KdsServer<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            max_message_bytes: self.max_message_bytes,
        }
    }
}

impl<T: Kds> tonic::server::NamedService for KdsServer<T> {
    const NAME: &'static str = SERVICE_NAME;
}

struct GlobalToZoneSvc<T>(Arc<T>);

impl<T: Kds> tonic::server::StreamingService<DeltaDiscoveryRequest> for GlobalToZoneSvc<T> {
    type Response = DeltaDiscoveryResponse;
    type ResponseStream = ResponseStream<DeltaDiscoveryResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DeltaDiscoveryRequest>>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.global_to_zone(request).await })
    }
}

struct ZoneToGlobalSvc<T>(Arc<T>);

impl<T: Kds> tonic::server::StreamingService<DeltaDiscoveryResponse> for ZoneToGlobalSvc<T> {
    type Response = DeltaDiscoveryRequest;
    type ResponseStream = ResponseStream<DeltaDiscoveryRequest>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DeltaDiscoveryResponse>>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.zone_to_global(request).await })
    }
}

impl<T, B> Service<http::Request<B>> for KdsServer<T>
where
    T: Kds,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let max = Some(self.max_message_bytes);
        match req.uri().path() {
            GLOBAL_TO_ZONE => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::default())
                    .apply_max_message_size_config(max, max);
                Ok(grpc.streaming(GlobalToZoneSvc(inner), req).await)
            }),
            ZONE_TO_GLOBAL => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::default())
                    .apply_max_message_size_config(max, max);
                Ok(grpc.streaming(ZoneToGlobalSvc(inner), req).await)
            }),
            path => {
                let status = Status::unimplemented(format!("{path} is not a KDS method"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// The zone's client for both streams on one connection.
#[derive(Clone)]
pub struct KdsClient {
    inner: tonic::client::Grpc<Channel>,
}

impl KdsClient {
    pub fn new(channel: Channel, max_message_bytes: usize) -> Self {
        Self {
            inner: tonic::client::Grpc::new(channel)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("KDS connection is not ready: {e}")))
    }

    pub async fn global_to_zone(
        &mut self,
        request: Request<ResponseStream<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Streaming<DeltaDiscoveryResponse>>, Status> {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(GLOBAL_TO_ZONE);
        self.inner
            .streaming(request.map(strip_errors), path, ProstCodec::default())
            .await
    }

    pub async fn zone_to_global(
        &mut self,
        request: Request<ResponseStream<DeltaDiscoveryResponse>>,
    ) -> Result<Response<Streaming<DeltaDiscoveryRequest>>, Status> {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(ZONE_TO_GLOBAL);
        self.inner
            .streaming(request.map(strip_errors), path, ProstCodec::default())
            .await
    }
}

/// A client stream carries messages only; an error item ends it.
fn strip_errors<T: Send + 'static>(s: ResponseStream<T>) -> impl Stream<Item = T> + Send + 'static {
    use tokio_stream::StreamExt;
    s.map_while(Result::ok)
}
