//! KurrentDB projections management (`event_store.client.projections`) served by Strata's
//! projections (docs/kurrentdb-compatibility.md, "Projections").
//!
//! | RPC | Strata |
//! |---|---|
//! | Create (continuous) | `PUT /projections/{name}` for a new name (ALREADY_EXISTS otherwise); created running |
//! | Create (one-time, transient) | UNIMPLEMENTED: Strata projections are continuous |
//! | Update | the same `PUT` for an existing name (NOT_FOUND otherwise); the emit option is ignored |
//! | Delete | `DELETE`; the emitted streams are kept, the checkpoint stream always goes |
//! | Enable / Disable (and Abort) | `start` / `stop` (a stop always checkpoints) |
//! | Reset | `reset` |
//! | State / Result | the state (of a partition); the result is the state |
//! | Statistics | one `Details` per projection asked for (name, all, continuous) |
//! | RestartSubsystem | accepted, nothing to restart |
//!
//! `state` and `result` come back as `google.protobuf.Value` (numbers as doubles).

mod value;

use crate::grpc::channel::ChannelStream;
use strata_js::JsProjection;
use strata_store::projection::RunState;
use tonic::{Request, Response, Status};

use crate::app::{run_blocking, App};
use crate::auth::{Action, Principal};
use crate::error::{Error, Result};
use crate::projections::View;

use super::proto::event_store::client::projections as pb;
use super::proto::event_store::client::Empty;
use pb::projections_server::Projections;

/// The Projections service.
#[derive(Clone)]
pub(crate) struct ProjectionsService {
    app: App,
}

impl ProjectionsService {
    /// The tonic server of this service.
    pub(crate) fn server(app: App) -> pb::projections_server::ProjectionsServer<Self> {
        pb::projections_server::ProjectionsServer::new(ProjectionsService { app })
    }

    fn principal<T>(&self, request: &Request<T>, action: Action<'_>) -> Result<(), Status> {
        let principal: Principal = super::auth::principal(request)?;
        principal.authorize(action).map_err(status_of)
    }

    /// Runs `f` on the projections, on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::projections::Projections) -> Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let projections = self.app.projections().clone();
        run_blocking("projection task failed", move || f(&projections))
            .await
            .and_then(|r| r)
            .map_err(status_of)
    }

    /// Compiles `query` (refused: INVALID_ARGUMENT with the engine's message) and puts it.
    async fn put(&self, name: String, query: String, create: bool) -> Result<(), Status> {
        crate::path::check_projection_name(&name).map_err(status_of)?;
        let options = self.app.projections().options().clone();
        if query.len() > options.max_source_bytes {
            return Err(Status::invalid_argument(format!(
                "a projection source is at most {} bytes",
                options.max_source_bytes
            )));
        }
        let limits = options.js_limits;
        let checked = query.clone();
        run_blocking("compile task failed", move || {
            JsProjection::compile(&checked, limits).map(drop)
        })
        .await
        .map_err(status_of)?
        .map_err(|e| status_of(crate::projections::http::script_error(e)))?;
        let exists = self.app.projections().describe(&name).is_ok();
        if create && exists {
            return Err(Status::already_exists(format!(
                "Conflict: projection {name} already exists"
            )));
        }
        if !create && !exists {
            return Err(not_found(&name));
        }
        self.blocking(move |p| p.put(&name, query).map(drop)).await
    }
}

fn status_of(e: Error) -> Status {
    super::status::from_error(e, None, 0)
}

fn not_found(name: &str) -> Status {
    Status::not_found(format!("projection {name} not found"))
}

/// A name from a request, or INVALID_ARGUMENT.
fn required(name: Option<String>) -> Result<String, Status> {
    match name {
        Some(n) if !n.is_empty() => Ok(n),
        _ => Err(Status::invalid_argument("the projection name is missing")),
    }
}

/// KurrentDB's status word of a run state.
fn status_word(state: RunState) -> &'static str {
    match state {
        RunState::Running => "Running",
        RunState::Stopped => "Stopped",
        RunState::Faulted => "Faulted",
    }
}

/// A projection's `Details`.
fn details(view: &View) -> pb::statistics_resp::Details {
    let s = &view.status;
    let position = s.position.map_or(0, |p| p.saturating_add(1));
    let progress = if s.lag == 0 {
        100.0
    } else {
        (position as f64 / (position + s.lag) as f64 * 100.0) as f32
    };
    let text = |p: Option<u64>| {
        // Commit and prepare positions are both the Strata position (see `convert`).
        p.map(|p| format!("C:{p}/P:{p}")).unwrap_or_default()
    };
    let i64_of = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    pb::statistics_resp::Details {
        core_processing_time: 0,
        version: i64_of(s.generation),
        epoch: i64_of(s.incarnation),
        effective_name: s.name.clone(),
        writes_in_progress: 0,
        reads_in_progress: 0,
        partitions_cached: i32::try_from(s.partitions).unwrap_or(i32::MAX),
        status: status_word(s.state).into(),
        state_reason: s
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default(),
        name: s.name.clone(),
        mode: "Continuous".into(),
        position: text(s.position),
        progress,
        last_checkpoint: text(s.checkpoint_position),
        events_processed_after_restart: i64_of(s.events_processed),
        checkpoint_status: String::new(),
        buffered_events: 0,
        write_pending_events_before_checkpoint: 0,
        write_pending_events_after_checkpoint: 0,
    }
}

#[tonic::async_trait]
impl Projections for ProjectionsService {
    async fn create(
        &self,
        request: Request<pb::CreateReq>,
    ) -> Result<Response<pb::CreateResp>, Status> {
        use pb::create_req::options::Mode;
        self.principal(&request, Action::ManageProjections)?;
        let options = request.into_inner().options.unwrap_or_default();
        let name = match options.mode {
            Some(Mode::Continuous(c)) => required(Some(c.name))?,
            Some(Mode::Transient(_)) | Some(Mode::OneTime(_)) => {
                return Err(Status::unimplemented(
                    "one-time and transient projections are not supported: Strata projections are continuous",
                ))
            }
            None => return Err(Status::invalid_argument("the projection mode is missing")),
        };
        self.put(name, options.query, true).await?;
        Ok(Response::new(pb::CreateResp {}))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateReq>,
    ) -> Result<Response<pb::UpdateResp>, Status> {
        self.principal(&request, Action::ManageProjections)?;
        let options = request.into_inner().options.unwrap_or_default();
        let name = required(Some(options.name))?;
        self.put(name, options.query, false).await?;
        Ok(Response::new(pb::UpdateResp {}))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteReq>,
    ) -> Result<Response<pb::DeleteResp>, Status> {
        self.principal(&request, Action::ManageProjections)?;
        let options = request.into_inner().options.unwrap_or_default();
        let name = required(Some(options.name))?;
        self.blocking(move |p| p.delete(&name)).await?;
        Ok(Response::new(pb::DeleteResp {}))
    }

    type StatisticsStream = ChannelStream<pb::StatisticsResp>;

    async fn statistics(
        &self,
        request: Request<pb::StatisticsReq>,
    ) -> Result<Response<Self::StatisticsStream>, Status> {
        use pb::statistics_req::options::Mode;
        self.principal(&request, Action::ReadProjections)?;
        let options = request.into_inner().options.unwrap_or_default();
        let projections = self.app.projections();
        let views: Vec<View> = match options.mode {
            Some(Mode::Name(name)) => vec![projections.describe(&name).map_err(|e| match e {
                Error::NotFound(_) => not_found(&name),
                e => status_of(e),
            })?],
            Some(Mode::All(_)) | Some(Mode::Continuous(_)) | None => {
                projections.list().map_err(status_of)?
            }
            Some(Mode::Transient(_)) | Some(Mode::OneTime(_)) => Vec::new(),
        };
        let (tx, rx) = ChannelStream::new(views.len().max(1));
        for view in &views {
            let resp = pb::StatisticsResp {
                details: Some(details(view)),
            };
            // The channel holds them all: this does not wait.
            let _ = tx.try_send(Ok(resp));
        }
        Ok(Response::new(rx))
    }

    async fn disable(
        &self,
        request: Request<pb::DisableReq>,
    ) -> Result<Response<pb::DisableResp>, Status> {
        self.principal(&request, Action::ManageProjections)?;
        let options = request.into_inner().options.unwrap_or_default();
        let name = required(Some(options.name))?;
        self.blocking(move |p| p.stop(&name).map(drop)).await?;
        Ok(Response::new(pb::DisableResp {}))
    }

    async fn enable(
        &self,
        request: Request<pb::EnableReq>,
    ) -> Result<Response<pb::EnableResp>, Status> {
        self.principal(&request, Action::ManageProjections)?;
        let options = request.into_inner().options.unwrap_or_default();
        let name = required(Some(options.name))?;
        self.blocking(move |p| p.start(&name).map(drop)).await?;
        Ok(Response::new(pb::EnableResp {}))
    }

    async fn reset(
        &self,
        request: Request<pb::ResetReq>,
    ) -> Result<Response<pb::ResetResp>, Status> {
        self.principal(&request, Action::ManageProjections)?;
        let options = request.into_inner().options.unwrap_or_default();
        let name = required(Some(options.name))?;
        self.blocking(move |p| p.reset(&name).map(drop)).await?;
        Ok(Response::new(pb::ResetResp {}))
    }

    async fn state(
        &self,
        request: Request<pb::StateReq>,
    ) -> Result<Response<pb::StateResp>, Status> {
        self.principal(&request, Action::ReadProjections)?;
        let options = request.into_inner().options.unwrap_or_default();
        let state = self.state_of(options.name, options.partition).await?;
        Ok(Response::new(pb::StateResp { state: Some(state) }))
    }

    async fn result(
        &self,
        request: Request<pb::ResultReq>,
    ) -> Result<Response<pb::ResultResp>, Status> {
        self.principal(&request, Action::ReadProjections)?;
        let options = request.into_inner().options.unwrap_or_default();
        let result = self.state_of(options.name, options.partition).await?;
        Ok(Response::new(pb::ResultResp {
            result: Some(result),
        }))
    }

    async fn restart_subsystem(&self, request: Request<Empty>) -> Result<Response<Empty>, Status> {
        // Strata's projections need no restart: accepted (admin) and nothing done.
        self.principal(&request, Action::ManageProjections)?;
        Ok(Response::new(Empty {}))
    }
}

impl ProjectionsService {
    /// The state of a projection (of `partition` when not empty) as a protobuf value; an
    /// unknown partition is `null`, as a partition not seen yet.
    async fn state_of(
        &self,
        name: String,
        partition: String,
    ) -> Result<prost_types::Value, Status> {
        let name = required(Some(name))?;
        let partition = (!partition.is_empty()).then_some(partition);
        let bytes = self
            .blocking(move |p| match p.state_json(&name, partition.as_deref()) {
                Err(Error::NotFound(_)) if partition.is_some() && p.describe(&name).is_ok() => {
                    Ok(b"null".to_vec())
                }
                other => other,
            })
            .await?;
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Status::internal(format!("the state is not JSON: {e}")))?;
        Ok(value::to_proto(json))
    }
}
