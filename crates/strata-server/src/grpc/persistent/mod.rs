//! KurrentDB persistent subscriptions (`event_store.client.persistent_subscriptions`) served by
//! Strata's consumer groups (docs/kurrentdb-compatibility.md, "Persistent subscriptions").
//!
//! | module | what |
//! |---|---|
//! | `naming` | (stream, group) ↔ consumer group name; KurrentDB streams ↔ group sources |
//! | `settings` | subscription settings ↔ group settings |
//! | `connections` | the Read sessions of each group, subscriber limits |
//! | `info` | GetInfo / List answers |
//! | `read` | the bidirectional Read: confirmation, events, acks and nacks |
//!
//! Errors carry the `exception` trailer the official clients match
//! (`persistent-subscription-does-not-exist`, `persistent-subscription-exists`,
//! `maximum-subscribers-reached`, `persistent-subscription-dropped`) with `stream-name` and
//! `group-name`.

mod connections;
mod info;
mod naming;
mod read;
mod settings;

use std::sync::Arc;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::app::App;
use crate::auth::{Action, Principal};
use crate::error::Error;
use crate::groups::settings::{Settings, Source, StartFrom};
use crate::groups::Group;
use connections::Connections;
use settings::Requested;

use super::proto::event_store::client::persistent_subscriptions as pb;
use super::proto::event_store::client::{Empty, StreamIdentifier};
use pb::persistent_subscriptions_server::PersistentSubscriptions;

/// The PersistentSubscriptions service.
#[derive(Clone)]
pub(crate) struct PersistentService {
    app: App,
    connections: Connections,
}

impl PersistentService {
    /// The service over `app`'s consumer groups.
    pub(crate) fn new(app: App) -> Self {
        PersistentService {
            app,
            connections: Connections::default(),
        }
    }

    /// The tonic server of this service.
    pub(crate) fn server(
        app: App,
    ) -> pb::persistent_subscriptions_server::PersistentSubscriptionsServer<Self> {
        pb::persistent_subscriptions_server::PersistentSubscriptionsServer::new(Self::new(app))
    }
}

/// A status with the `exception` trailer and the subscription's names.
fn subscription_status(
    code: Code,
    message: String,
    exception: &'static str,
    stream: &str,
    group: &str,
) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert("exception", MetadataValue::from_static(exception));
    if let Ok(v) = MetadataValue::try_from(stream) {
        metadata.insert("stream-name", v);
    }
    if let Ok(v) = MetadataValue::try_from(group) {
        metadata.insert("group-name", v);
    }
    Status::with_metadata(code, message, metadata)
}

/// NOT_FOUND `persistent-subscription-does-not-exist`.
fn does_not_exist(stream: &str, group: &str) -> Status {
    subscription_status(
        Code::NotFound,
        format!("Subscription group {group} on stream {stream} does not exist."),
        "persistent-subscription-does-not-exist",
        stream,
        group,
    )
}

/// ALREADY_EXISTS `persistent-subscription-exists`.
fn exists(stream: &str, group: &str) -> Status {
    subscription_status(
        Code::AlreadyExists,
        format!("Subscription group {group} on stream {stream} exists."),
        "persistent-subscription-exists",
        stream,
        group,
    )
}

/// FAILED_PRECONDITION `maximum-subscribers-reached`.
fn maximum_subscribers(stream: &str, group: &str) -> Status {
    subscription_status(
        Code::FailedPrecondition,
        format!("Maximum subscriptions reached for subscription group {group} on stream {stream}."),
        "maximum-subscribers-reached",
        stream,
        group,
    )
}

/// CANCELLED `persistent-subscription-dropped`.
fn dropped(stream: &str, group: &str, why: &str) -> Status {
    subscription_status(
        Code::Cancelled,
        format!("Subscription group {group} on stream {stream} was dropped: {why}"),
        "persistent-subscription-dropped",
        stream,
        group,
    )
}

/// What ServerFeatures lists for this service beyond its methods: subscriptions to streams
/// and to `$all` (the clients refuse `$all` without it).
pub(crate) const FEATURES: super::MethodFeatures = &[("create", &["stream", "all"])];

/// A Strata error as the clients expect it.
fn status_of(e: Error) -> Status {
    super::status::from_error(e, None, 0)
}

use super::convert::stream_name;

impl PersistentService {
    fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        super::auth::principal(request)
    }

    /// The live group of the subscription (`stream`, `group`): the group of the encoded name,
    /// else a group named `group` (made over HTTP); either only when it reads `stream`.
    async fn find(&self, stream: &str, group: &str) -> Result<Arc<Group>, Status> {
        let groups = self.app.groups();
        if let Ok(name) = naming::group_name(stream, group) {
            match groups.get(&name).await {
                // (A group made over HTTP under such a name may read something else.)
                Ok(g) if naming::source_stream(&g.source()) == stream => return Ok(g),
                Ok(_) => {}
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(status_of(e)),
            }
        }
        match groups.get(group).await {
            Ok(g) if naming::source_stream(&g.source()) == stream => Ok(g),
            Ok(_) | Err(Error::NotFound(_)) => Err(does_not_exist(stream, group)),
            Err(e) => Err(status_of(e)),
        }
    }

    /// Creates or updates: `create` refuses an existing subscription, `update` a missing one
    /// (and keeps its source, start and ordering: only the timeout, retries and subscriber limit
    /// change, as KurrentDB keeps a subscription's checkpoint across updates).
    async fn put(
        &self,
        principal: &Principal,
        stream: &str,
        group: &str,
        from: StartFrom,
        requested: Requested,
        create: bool,
    ) -> Result<(), Status> {
        let source = naming::source_of(stream).map_err(Status::invalid_argument)?;
        if let (Source::Category(_), StartFrom::At(n)) = (&source, from) {
            if n > 0 {
                return Err(Status::invalid_argument(format!(
                    "a subscription to the category stream {stream} starts at its start or its end, not at revision {n}"
                )));
            }
        }
        let mut settings = requested
            .to_settings(source, from)
            .map_err(Status::invalid_argument)?;
        principal
            .authorize(Action::ManageGroup(settings.source.auth_scope()))
            .map_err(status_of)?;
        let existing = match self.find(stream, group).await {
            Ok(g) => Some(g),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => return Err(s),
        };
        let name = match (&existing, create) {
            (Some(_), true) => return Err(exists(stream, group)),
            (None, false) => return Err(does_not_exist(stream, group)),
            (Some(g), false) => {
                let current: Settings = g.settings_now();
                settings.from = current.from;
                settings.ordering = current.ordering;
                g.name().to_owned()
            }
            (None, true) => naming::group_name(stream, group).map_err(Status::invalid_argument)?,
        };
        let (created, _) = self
            .app
            .groups()
            .put(&name, settings)
            .await
            .map_err(status_of)?;
        if create && !created {
            return Err(exists(stream, group));
        }
        self.connections.set_limit(
            &name,
            u32::try_from(requested.max_subscriber_count).unwrap_or(0),
        );
        Ok(())
    }
}

/// Where a stream subscription starts.
fn stream_start(option: Option<StreamStart>) -> StartFrom {
    match option {
        Some(StreamStart::Revision(r)) => StartFrom::At(r),
        Some(StreamStart::Start) | None => StartFrom::Start,
        Some(StreamStart::End) => StartFrom::End,
    }
}

/// The wire's stream start, common to Create and Update.
enum StreamStart {
    Revision(u64),
    Start,
    End,
}

/// Where a `$all` subscription starts: a commit position is the Strata position (see
/// `convert`), inclusive.
fn all_start(option: Option<AllStart>) -> StartFrom {
    match option {
        Some(AllStart::Position(commit)) => StartFrom::At(commit),
        Some(AllStart::Start) | None => StartFrom::Start,
        Some(AllStart::End) => StartFrom::End,
    }
}

/// The wire's `$all` start, common to Create and Update.
enum AllStart {
    Position(u64),
    Start,
    End,
}

/// Create's and Update's options, unpacked: (stream, start).
fn create_target(options: &pb::create_req::Options) -> Result<(String, StartFrom), Status> {
    use pb::create_req::{all_options, options::StreamOption, stream_options};
    match &options.stream_option {
        Some(StreamOption::Stream(s)) => {
            let start = s.revision_option.as_ref().map(|r| match r {
                stream_options::RevisionOption::Revision(n) => StreamStart::Revision(*n),
                stream_options::RevisionOption::Start(_) => StreamStart::Start,
                stream_options::RevisionOption::End(_) => StreamStart::End,
            });
            Ok((
                stream_name(s.stream_identifier.as_ref())?,
                stream_start(start),
            ))
        }
        Some(StreamOption::All(a)) => {
            if let Some(all_options::FilterOption::Filter(_)) = a.filter_option {
                return Err(Status::invalid_argument(
                    "filtered persistent subscriptions to $all are not supported: a consumer group reads $all, one stream or one category ($ce-<category>)",
                ));
            }
            let start = a.all_option.as_ref().map(|o| match o {
                all_options::AllOption::Position(p) => AllStart::Position(p.commit_position),
                all_options::AllOption::Start(_) => AllStart::Start,
                all_options::AllOption::End(_) => AllStart::End,
            });
            Ok((naming::ALL.to_owned(), all_start(start)))
        }
        // Old clients: the deprecated stream identifier and the settings' revision.
        None => {
            #[allow(deprecated)]
            let id = options.stream_identifier.as_ref();
            #[allow(deprecated)]
            let revision = options.settings.as_ref().map_or(0, |s| s.revision);
            Ok((stream_name(id)?, StartFrom::At(revision)))
        }
    }
}

fn update_target(options: &pb::update_req::Options) -> Result<(String, StartFrom), Status> {
    use pb::update_req::{all_options, options::StreamOption, stream_options};
    match &options.stream_option {
        Some(StreamOption::Stream(s)) => {
            let start = s.revision_option.as_ref().map(|r| match r {
                stream_options::RevisionOption::Revision(n) => StreamStart::Revision(*n),
                stream_options::RevisionOption::Start(_) => StreamStart::Start,
                stream_options::RevisionOption::End(_) => StreamStart::End,
            });
            Ok((
                stream_name(s.stream_identifier.as_ref())?,
                stream_start(start),
            ))
        }
        Some(StreamOption::All(a)) => {
            let start = a.all_option.as_ref().map(|o| match o {
                all_options::AllOption::Position(p) => AllStart::Position(p.commit_position),
                all_options::AllOption::Start(_) => AllStart::Start,
                all_options::AllOption::End(_) => AllStart::End,
            });
            Ok((naming::ALL.to_owned(), all_start(start)))
        }
        None => {
            #[allow(deprecated)]
            let id = options.stream_identifier.as_ref();
            Ok((stream_name(id)?, StartFrom::Start))
        }
    }
}

/// The stream of the Delete / GetInfo / ReplayParked / Read `stream_option`s: a stream
/// identifier or `$all`.
fn target(id: Option<&StreamIdentifier>, all: bool) -> Result<String, Status> {
    if all {
        Ok(naming::ALL.to_owned())
    } else {
        stream_name(id)
    }
}

#[tonic::async_trait]
impl PersistentSubscriptions for PersistentService {
    async fn create(
        &self,
        request: Request<pb::CreateReq>,
    ) -> Result<Response<pb::CreateResp>, Status> {
        let principal = self.principal(&request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("options are missing"))?;
        let (stream, from) = create_target(&options)?;
        let s = options.settings.clone().unwrap_or_default();
        use pb::create_req::settings::MessageTimeout;
        let (ticks, ms) = match s.message_timeout {
            Some(MessageTimeout::MessageTimeoutTicks(t)) => (Some(t), None),
            Some(MessageTimeout::MessageTimeoutMs(m)) => (None, Some(m)),
            None => (None, None),
        };
        #[allow(deprecated)]
        let strategy = if s.consumer_strategy.is_empty() {
            settings::strategy_of_enum(s.named_consumer_strategy).to_owned()
        } else {
            s.consumer_strategy.clone()
        };
        let requested = Requested {
            message_timeout_ms: settings::timeout_ms(ticks, ms),
            max_retry_count: s.max_retry_count,
            max_subscriber_count: s.max_subscriber_count,
            strategy,
        };
        self.put(
            &principal,
            &stream,
            &options.group_name,
            from,
            requested,
            true,
        )
        .await?;
        Ok(Response::new(pb::CreateResp {}))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateReq>,
    ) -> Result<Response<pb::UpdateResp>, Status> {
        let principal = self.principal(&request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("options are missing"))?;
        let (stream, from) = update_target(&options)?;
        let s = options.settings.unwrap_or_default();
        use pb::update_req::settings::MessageTimeout;
        let (ticks, ms) = match s.message_timeout {
            Some(MessageTimeout::MessageTimeoutTicks(t)) => (Some(t), None),
            Some(MessageTimeout::MessageTimeoutMs(m)) => (None, Some(m)),
            None => (None, None),
        };
        let requested = Requested {
            message_timeout_ms: settings::timeout_ms(ticks, ms),
            max_retry_count: s.max_retry_count,
            max_subscriber_count: s.max_subscriber_count,
            // The ordering is kept (see `put`); the strategy is checked only.
            strategy: settings::strategy_of_enum(s.named_consumer_strategy).to_owned(),
        };
        self.put(
            &principal,
            &stream,
            &options.group_name,
            from,
            requested,
            false,
        )
        .await?;
        Ok(Response::new(pb::UpdateResp {}))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteReq>,
    ) -> Result<Response<pb::DeleteResp>, Status> {
        use pb::delete_req::options::StreamOption;
        let principal = self.principal(&request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("options are missing"))?;
        let stream = match &options.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => target(Some(id), false)?,
            Some(StreamOption::All(_)) => target(None, true)?,
            None => return Err(Status::invalid_argument("the stream option is missing")),
        };
        let group = self.find(&stream, &options.group_name).await?;
        principal
            .authorize(Action::ManageGroup(group.source().auth_scope()))
            .map_err(status_of)?;
        match self.app.groups().delete(&group).await {
            Ok(()) => {}
            Err(Error::NotFound(_)) => return Err(does_not_exist(&stream, &options.group_name)),
            Err(e) => return Err(status_of(e)),
        }
        self.connections.forget(group.name());
        Ok(Response::new(pb::DeleteResp {}))
    }

    type ReadStream = read::ReadStream;

    async fn read(
        &self,
        request: Request<Streaming<pb::ReadReq>>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        read::start(self, request).await
    }

    async fn get_info(
        &self,
        request: Request<pb::GetInfoReq>,
    ) -> Result<Response<pb::GetInfoResp>, Status> {
        use pb::get_info_req::options::StreamOption;
        let principal = self.principal(&request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("options are missing"))?;
        let stream = match &options.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => target(Some(id), false)?,
            Some(StreamOption::All(_)) => target(None, true)?,
            None => return Err(Status::invalid_argument("the stream option is missing")),
        };
        let group = self.find(&stream, &options.group_name).await?;
        principal
            .authorize(Action::ConsumeGroup(group.source().auth_scope()))
            .map_err(status_of)?;
        let mut infos = info::describe(&self.app, &self.connections, vec![group]).await?;
        Ok(Response::new(pb::GetInfoResp {
            subscription_info: infos.pop(),
        }))
    }

    async fn replay_parked(
        &self,
        request: Request<pb::ReplayParkedReq>,
    ) -> Result<Response<pb::ReplayParkedResp>, Status> {
        use pb::replay_parked_req::options::{StopAtOption, StreamOption};
        let principal = self.principal(&request)?;
        let options = request
            .into_inner()
            .options
            .ok_or_else(|| Status::invalid_argument("options are missing"))?;
        let stream = match &options.stream_option {
            Some(StreamOption::StreamIdentifier(id)) => target(Some(id), false)?,
            Some(StreamOption::All(_)) => target(None, true)?,
            None => return Err(Status::invalid_argument("the stream option is missing")),
        };
        let group = self.find(&stream, &options.group_name).await?;
        principal
            .authorize(Action::ManageGroup(group.source().auth_scope()))
            .map_err(status_of)?;
        let window = self.app.groups_window();
        let max = match options.stop_at_option {
            Some(StopAtOption::StopAt(n)) if n >= 0 => {
                usize::try_from(n).unwrap_or(usize::MAX).min(window)
            }
            _ => window,
        };
        match self.app.groups().replay(&group, max).await {
            Ok(_) => Ok(Response::new(pb::ReplayParkedResp {})),
            Err(Error::NotFound(_)) => Err(does_not_exist(&stream, &options.group_name)),
            Err(e) => Err(status_of(e)),
        }
    }

    async fn list(&self, request: Request<pb::ListReq>) -> Result<Response<pb::ListResp>, Status> {
        use pb::list_req::{options::ListOption, stream_option::StreamOption};
        let principal = self.principal(&request)?;
        let options = request.into_inner().options.unwrap_or_default();
        let only: Option<String> = match options.list_option {
            None | Some(ListOption::ListAllSubscriptions(_)) => None,
            Some(ListOption::ListForStream(s)) => match s.stream_option {
                Some(StreamOption::Stream(id)) => Some(stream_name(Some(&id))?),
                Some(StreamOption::All(_)) => Some(naming::ALL.to_owned()),
                None => None,
            },
        };
        principal.authorize(Action::ServerInfo).map_err(status_of)?;
        let groups: Vec<Arc<Group>> = self
            .app
            .groups()
            .all()
            .await
            .map_err(status_of)?
            .into_iter()
            .filter(|g| {
                let source = g.source();
                only.as_deref()
                    .is_none_or(|s| naming::source_stream(&source) == s)
                    && principal
                        .authorize(Action::ConsumeGroup(source.auth_scope()))
                        .is_ok()
            })
            .collect();
        if let Some(stream) = &only {
            // KurrentDB answers NOT_FOUND for a stream without subscriptions.
            if groups.is_empty() {
                return Err(Status::not_found(format!(
                    "no persistent subscription on stream {stream}"
                )));
            }
        }
        let subscriptions = info::describe(&self.app, &self.connections, groups).await?;
        Ok(Response::new(pb::ListResp { subscriptions }))
    }

    async fn restart_subsystem(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        // Consumer groups need no restart: accepted (with the write role) and nothing done.
        let principal = self.principal(&request)?;
        principal
            .authorize(Action::ManageGroup(""))
            .map_err(status_of)?;
        Ok(Response::new(Empty {}))
    }
}
