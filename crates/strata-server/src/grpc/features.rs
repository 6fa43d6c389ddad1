//! `event_store.client.server_features.ServerFeatures`: the methods this server supports, as
//! the clients probe them to decide what they may call (BatchAppend, persistent subscriptions
//! to `$all`, ...). The list is every method of every mounted service, read from the compiled
//! descriptor set (`proto::DESCRIPTOR_SET`), with the features a service declared when it was
//! mounted ([`super::Mounted::with_features`]); names in lower case as KurrentDB sends them
//! (`batchappend`, `event_store.client.streams.streams`).

use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::grpc::proto::event_store::client::server_features::server_features_server::{
    ServerFeatures, ServerFeaturesServer,
};
use crate::grpc::proto::event_store::client::server_features::{SupportedMethod, SupportedMethods};
use crate::grpc::proto::event_store::client::Empty;
use crate::grpc::proto::DESCRIPTOR_SET;
use crate::grpc::MethodFeatures;

/// The full gRPC name of this service.
pub(super) const SERVICE_NAME: &str = "event_store.client.server_features.ServerFeatures";

/// The KurrentDB server version announced: the protocol revision the `.proto` files follow.
/// Clients compare it to enable calls by version.
pub(crate) const SERVER_VERSION: &str = "24.10.0";

/// The ServerFeatures service: its answer is computed once, at mount time.
pub(super) struct FeaturesService {
    methods: Vec<SupportedMethod>,
}

/// The generated server listing `services`: `(full name, [(method, features)])` of every
/// mounted service.
pub(super) fn server(
    _app: &App,
    services: &[(&'static str, MethodFeatures)],
) -> ServerFeaturesServer<FeaturesService> {
    ServerFeaturesServer::new(FeaturesService {
        methods: supported_methods(services),
    })
}

/// Every method of `services` in the descriptor set, in declaration order.
fn supported_methods(services: &[(&'static str, MethodFeatures)]) -> Vec<SupportedMethod> {
    let Ok(set) = prost_types::FileDescriptorSet::decode(DESCRIPTOR_SET) else {
        tracing::error!("the compiled gRPC descriptor set does not decode");
        return Vec::new();
    };
    let mut methods = Vec::new();
    for (full_name, features) in services {
        for file in &set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                if name != *full_name {
                    continue;
                }
                for method in &service.method {
                    let method_name = method.name().to_ascii_lowercase();
                    let features = features
                        .iter()
                        .find(|(m, _)| m.eq_ignore_ascii_case(&method_name))
                        .map(|(_, f)| f.iter().map(|s| (*s).to_owned()).collect())
                        .unwrap_or_default();
                    methods.push(SupportedMethod {
                        method_name,
                        service_name: name.to_ascii_lowercase(),
                        features,
                    });
                }
            }
        }
    }
    methods
}

#[tonic::async_trait]
impl ServerFeatures for FeaturesService {
    async fn get_supported_methods(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<SupportedMethods>, Status> {
        Ok(Response::new(SupportedMethods {
            methods: self.methods.clone(),
            event_store_server_version: SERVER_VERSION.to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_the_methods_of_the_named_services() {
        let methods = supported_methods(&[
            (
                "event_store.client.streams.Streams",
                &[("read", &["position"])],
            ),
            (SERVICE_NAME, &[]),
        ]);
        let names: Vec<(&str, &str)> = methods
            .iter()
            .map(|m| (m.service_name.as_str(), m.method_name.as_str()))
            .collect();
        assert!(names.contains(&("event_store.client.streams.streams", "batchappend")));
        assert!(names.contains(&(
            "event_store.client.server_features.serverfeatures",
            "getsupportedmethods"
        )));
        assert_eq!(names.len(), 6);
        assert_eq!(methods[0].features, ["position"]);
    }
}
