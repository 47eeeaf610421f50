import { Migration } from '@mikro-orm/migrations';

export class Migration20261123194157_join_token_uses extends Migration {

  override async up(): Promise<void> {
    this.addSql(`alter table \`join_tokens\` add column \`max_uses\` integer null;`);
    this.addSql(`alter table \`join_tokens\` add column \`use_count\` integer not null default 0;`);
  }

}
