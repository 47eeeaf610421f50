import { Migration } from '@mikro-orm/migrations';

export class Migration20261123152157_initial extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table "users" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "name" varchar(100) not null, "global_role" varchar(64) not null default 'user', "token_hash" varchar(64) not null, "email" varchar(320) null, "active" boolean not null default true, "deleted" boolean not null default false, "ssh_public_key" text null, constraint "users_pkey" primary key ("id"));`);
    this.addSql(`alter table "users" add constraint "users_name_unique" unique ("name");`);
    this.addSql(`alter table "users" add constraint "users_token_hash_unique" unique ("token_hash");`);

    this.addSql(`create table "projects" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "name" varchar(100) not null, "owner_id" uuid not null, "is_public" boolean not null default false, "deleted" boolean not null default false, "ssh_public_key" text not null, "ssh_private_key" text not null, constraint "projects_pkey" primary key ("id"));`);
    this.addSql(`alter table "projects" add constraint "projects_name_unique" unique ("name");`);

    this.addSql(`create table "secrets" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "project_id" uuid not null, "name" varchar(200) not null, "value" text not null, constraint "secrets_pkey" primary key ("id"));`);
    this.addSql(`alter table "secrets" add constraint "secrets_project_id_name_unique" unique ("project_id", "name");`);

    this.addSql(`create table "runs" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "project_id" uuid not null, "user_id" uuid not null, "run_name" varchar(200) not null, "status" varchar(64) not null default 'submitted', "termination_reason" varchar(64) null, "run_spec" jsonb not null, "submitted_at" timestamptz not null, "finished_at" timestamptz null, "last_processed_at" timestamptz not null, "deleted" boolean not null default false, "priority" int not null default 0, "resubmission_attempt" int not null default 0, "next_triggered_at" timestamptz null, constraint "runs_pkey" primary key ("id"));`);
    this.addSql(`create index "runs_status_index" on "runs" ("status");`);
    this.addSql(`create index "runs_project_id_run_name_index" on "runs" ("project_id", "run_name");`);
    this.addSql(`create index "runs_project_id_submitted_at_index" on "runs" ("project_id", "submitted_at");`);

    this.addSql(`create table "fleets" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "project_id" uuid not null, "name" varchar(100) not null, "status" varchar(64) not null default 'submitted', "spec" jsonb not null, "deleted" boolean not null default false, constraint "fleets_pkey" primary key ("id"));`);
    this.addSql(`create index "fleets_status_index" on "fleets" ("status");`);
    this.addSql(`create index "fleets_project_id_name_index" on "fleets" ("project_id", "name");`);

    this.addSql(`create table "join_tokens" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "project_id" uuid not null, "fleet_id" uuid null, "purpose" varchar(32) not null, "token_hash" varchar(64) not null, "expires_at" timestamptz not null, "revoked" boolean not null default false, "used_at" timestamptz null, constraint "join_tokens_pkey" primary key ("id"));`);
    this.addSql(`alter table "join_tokens" add constraint "join_tokens_token_hash_unique" unique ("token_hash");`);

    this.addSql(`create table "instances" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "fleet_id" uuid null, "project_id" uuid not null, "name" varchar(200) not null, "instance_num" int not null default 0, "status" varchar(64) not null default 'pending', "termination_reason" varchar(64) null, "termination_reason_message" text null, "unreachable" boolean not null default false, "busy_blocks" int not null default 0, "total_blocks" int not null default 1, "host_info" jsonb null, "price" double precision null, "backend" varchar(64) null, "region" varchar(200) null, "last_heartbeat_at" timestamptz null, "deleted" boolean not null default false, constraint "instances_pkey" primary key ("id"));`);
    this.addSql(`create index "instances_status_index" on "instances" ("status");`);

    this.addSql(`create table "jobs" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "run_id" uuid not null, "job_num" int not null default 0, "replica_num" int not null default 0, "submission_num" int not null default 0, "status" varchar(64) not null default 'submitted', "termination_reason" varchar(64) null, "termination_reason_message" text null, "exit_status" int null, "job_spec" jsonb not null, "provisioning_data" jsonb null, "instance_id" uuid null, "submitted_at" timestamptz not null, "finished_at" timestamptz null, "disconnected_at" timestamptz null, "last_processed_at" timestamptz not null, constraint "jobs_pkey" primary key ("id"));`);
    this.addSql(`create index "jobs_status_index" on "jobs" ("status");`);
    this.addSql(`create index "jobs_run_id_replica_num_job_num_submission_num_index" on "jobs" ("run_id", "replica_num", "job_num", "submission_num");`);

    this.addSql(`create table "code_blobs" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "project_id" uuid not null, "blob_hash" varchar(128) not null, "blob" bytea null, "path" text null, constraint "code_blobs_pkey" primary key ("id"));`);
    this.addSql(`alter table "code_blobs" add constraint "code_blobs_project_id_blob_hash_unique" unique ("project_id", "blob_hash");`);

    this.addSql(`create table "members" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "project_id" uuid not null, "user_id" uuid not null, "project_role" varchar(64) not null default 'user', constraint "members_pkey" primary key ("id"));`);
    this.addSql(`alter table "members" add constraint "members_project_id_user_id_unique" unique ("project_id", "user_id");`);

    this.addSql(`alter table "projects" add constraint "projects_owner_id_foreign" foreign key ("owner_id") references "users" ("id") on update cascade on delete no action;`);

    this.addSql(`alter table "secrets" add constraint "secrets_project_id_foreign" foreign key ("project_id") references "projects" ("id") on update cascade on delete cascade;`);

    this.addSql(`alter table "runs" add constraint "runs_project_id_foreign" foreign key ("project_id") references "projects" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "runs" add constraint "runs_user_id_foreign" foreign key ("user_id") references "users" ("id") on update cascade on delete no action;`);

    this.addSql(`alter table "fleets" add constraint "fleets_project_id_foreign" foreign key ("project_id") references "projects" ("id") on update cascade on delete cascade;`);

    this.addSql(`alter table "join_tokens" add constraint "join_tokens_project_id_foreign" foreign key ("project_id") references "projects" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "join_tokens" add constraint "join_tokens_fleet_id_foreign" foreign key ("fleet_id") references "fleets" ("id") on update cascade on delete set null;`);

    this.addSql(`alter table "instances" add constraint "instances_fleet_id_foreign" foreign key ("fleet_id") references "fleets" ("id") on update cascade on delete set null;`);
    this.addSql(`alter table "instances" add constraint "instances_project_id_foreign" foreign key ("project_id") references "projects" ("id") on update cascade on delete cascade;`);

    this.addSql(`alter table "jobs" add constraint "jobs_run_id_foreign" foreign key ("run_id") references "runs" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "jobs" add constraint "jobs_instance_id_foreign" foreign key ("instance_id") references "instances" ("id") on update cascade on delete set null;`);

    this.addSql(`alter table "code_blobs" add constraint "code_blobs_project_id_foreign" foreign key ("project_id") references "projects" ("id") on update cascade on delete cascade;`);

    this.addSql(`alter table "members" add constraint "members_project_id_foreign" foreign key ("project_id") references "projects" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "members" add constraint "members_user_id_foreign" foreign key ("user_id") references "users" ("id") on update cascade on delete cascade;`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table "projects" drop constraint "projects_owner_id_foreign";`);

    this.addSql(`alter table "runs" drop constraint "runs_user_id_foreign";`);

    this.addSql(`alter table "members" drop constraint "members_user_id_foreign";`);

    this.addSql(`alter table "secrets" drop constraint "secrets_project_id_foreign";`);

    this.addSql(`alter table "runs" drop constraint "runs_project_id_foreign";`);

    this.addSql(`alter table "fleets" drop constraint "fleets_project_id_foreign";`);

    this.addSql(`alter table "join_tokens" drop constraint "join_tokens_project_id_foreign";`);

    this.addSql(`alter table "instances" drop constraint "instances_project_id_foreign";`);

    this.addSql(`alter table "code_blobs" drop constraint "code_blobs_project_id_foreign";`);

    this.addSql(`alter table "members" drop constraint "members_project_id_foreign";`);

    this.addSql(`alter table "jobs" drop constraint "jobs_run_id_foreign";`);

    this.addSql(`alter table "join_tokens" drop constraint "join_tokens_fleet_id_foreign";`);

    this.addSql(`alter table "instances" drop constraint "instances_fleet_id_foreign";`);

    this.addSql(`alter table "jobs" drop constraint "jobs_instance_id_foreign";`);

    this.addSql(`drop table if exists "users" cascade;`);

    this.addSql(`drop table if exists "projects" cascade;`);

    this.addSql(`drop table if exists "secrets" cascade;`);

    this.addSql(`drop table if exists "runs" cascade;`);

    this.addSql(`drop table if exists "fleets" cascade;`);

    this.addSql(`drop table if exists "join_tokens" cascade;`);

    this.addSql(`drop table if exists "instances" cascade;`);

    this.addSql(`drop table if exists "jobs" cascade;`);

    this.addSql(`drop table if exists "code_blobs" cascade;`);

    this.addSql(`drop table if exists "members" cascade;`);
  }

}
