//! `event_store.client.gossip.Gossip`: cluster membership as the clients' discovery reads it
//! (`esdb+discover://`, `kurrentdb+discover://`). Strata answers with one member, itself, alive
//! and leader, at the host and port the client called it by (the call's `:authority`, or
//! `Host`), so the client connects back the way it came; without one, at the listener's
//! address.

use std::sync::OnceLock;

use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::app::App;
use crate::grpc::convert::{ticks, uuid_to_proto};
use crate::grpc::proto::event_store::client::gossip::gossip_server::{Gossip, GossipServer};
use crate::grpc::proto::event_store::client::gossip::{
    member_info, ClusterInfo, EndPoint, MemberInfo,
};
use crate::grpc::proto::event_store::client::Empty;
use crate::grpc::CallAuthority;

/// The Gossip service.
pub(super) struct GossipService;

/// The generated server around [`GossipService`].
pub(super) fn server(_app: &App) -> GossipServer<GossipService> {
    GossipServer::new(GossipService)
}

/// This process's instance id in the member list (random, fixed for the process's life).
fn instance_id() -> Uuid {
    static ID: OnceLock<Uuid> = OnceLock::new();
    *ID.get_or_init(Uuid::new_v4)
}

/// `host:port` split at the last colon (IPv6 literals keep their brackets off).
fn split_authority(authority: &str) -> Option<(String, u32)> {
    let (host, port) = authority.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port))
}

#[tonic::async_trait]
impl Gossip for GossipService {
    async fn read(&self, request: Request<Empty>) -> Result<Response<ClusterInfo>, Status> {
        let (address, port) = request
            .extensions()
            .get::<CallAuthority>()
            .and_then(|a| split_authority(&a.0))
            .ok_or_else(|| Status::internal("the call's authority is unknown"))?;
        let now_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let member = MemberInfo {
            instance_id: Some(uuid_to_proto(instance_id(), false)),
            time_stamp: ticks(now_micros),
            state: member_info::VNodeState::Leader as i32,
            is_alive: true,
            http_end_point: Some(EndPoint { address, port }),
        };
        Ok(Response::new(ClusterInfo {
            members: vec![member],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::split_authority;

    #[test]
    fn authorities() {
        assert_eq!(
            split_authority("localhost:2113"),
            Some(("localhost".into(), 2113))
        );
        assert_eq!(split_authority("[::1]:80"), Some(("::1".into(), 80)));
        assert_eq!(split_authority("nohost"), None);
    }
}
